// What the all-reduce benchmark programs share: their command line, the input and
// its check, the timing summary and the RESULT line that bench/allreduce_bench.py
// parses, and the fork/pipe plumbing of the programs that run N processes themselves.
//
// Guarantees:
//  * Every program reports one line per buffer size,
//      RESULT impl=<label> n=<ranks> bytes=<S> iters=<k> avg_s=<t> min_s=<t> algbw_gbs=<x> busbw_gbs=<x>
//    where avg_s is the timed loop's wall time over k iterations (back to back, after
//    warm-up and one barrier; the slowest rank), min_s the fastest single iteration
//    (slowest rank of that iteration; with ranks out of step it can exceed avg_s), algbw = S / avg_s and busbw = algbw * 2(N-1)/N
//    (the nccl-tests definitions; GB = 10^9 bytes).
//  * The input of rank r is x[i] = r + 1 + (i mod 7), small integers, so the sum after
//    the first all-reduce is exact in float32 and check_first_sum() can verify it.
// Benchmark code: it may exit() on a broken pipe or a failed fork, never a library.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace ravnest::bench {

struct BenchArgs {
  int ranks = 2;
  std::vector<size_t> mib = {1, 16, 64};  // buffer sizes, MiB of float32
  int warmup = 2;
  int iters = 10;
  std::string label;        // impl= of the RESULT lines (each program has a default)
  std::string algorithm;    // Gloo: ring | ring_chunked | allreduce
  size_t chunk_kib = 0;     // Ravnest: RingOptions::chunk_bytes / 1024 (0: RingOptions' default)
  double link_mbit = 0;     // Ravnest: emulated link rate per direction (0: direct loopback)
  double delay_ms = 0;      // Ravnest: one-way delay of one ring hop through the relay
  bool isolated = false;    // Ravnest: iterations start together, one at a time (see summarize_isolated)
};

inline void die(const std::string& what) {
  std::fprintf(stderr, "allreduce bench: %s\n", what.c_str());
  std::exit(2);
}

inline std::vector<size_t> parse_sizes(const std::string& list) {
  std::vector<size_t> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    const std::string item = list.substr(pos, comma - pos);
    char* end = nullptr;
    const unsigned long v = std::strtoul(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v == 0 || v > 4096) die("--mib: '" + item + "' is not a size in MiB (1..4096)");
    out.push_back(v);
    pos = comma + 1;
  }
  return out;
}

// --ranks N --mib 1,16,64 --warmup W --iters K --label L --algorithm A --chunk-kib C
// --link-mbit R --delay-ms D --isolated 0|1; unknown flags are errors.
inline BenchArgs parse_args(int argc, char** argv, const std::string& default_label) {
  BenchArgs a;
  a.label = default_label;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) die(flag + " needs a value");
    const std::string value = argv[++i];
    auto number = [&](double lo, double hi) {
      char* end = nullptr;
      const double v = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !(v >= lo && v <= hi)) {
        die(flag + ": '" + value + "' is not a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
      }
      return v;
    };
    if (flag == "--ranks") a.ranks = static_cast<int>(number(1, 64));
    else if (flag == "--mib") a.mib = parse_sizes(value);
    else if (flag == "--warmup") a.warmup = static_cast<int>(number(1, 1000));
    else if (flag == "--iters") a.iters = static_cast<int>(number(1, 10000));
    else if (flag == "--label") a.label = value;
    else if (flag == "--algorithm") a.algorithm = value;
    else if (flag == "--chunk-kib") a.chunk_kib = static_cast<size_t>(number(1, 1 << 20));
    else if (flag == "--link-mbit") a.link_mbit = number(0, 1e6);
    else if (flag == "--delay-ms") a.delay_ms = number(0, 30000);
    else if (flag == "--isolated") a.isolated = number(0, 1) != 0;
    else die("unknown flag '" + flag + "'");
  }
  return a;
}

inline size_t floats_of_mib(size_t mib) { return mib * (size_t{1} << 20) / sizeof(float); }

inline void fill_input(std::span<float> data, int rank) {
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(rank + 1 + static_cast<int>(i % 7));
}

// After one sum all-reduce of fill_input() buffers over n ranks.
inline bool check_first_sum(std::span<const float> data, int n) {
  for (size_t i = 0; i < data.size(); ++i) {
    const float want = static_cast<float>(n * (n + 1) / 2 + n * static_cast<int>(i % 7));
    if (data[i] != want) {
      std::fprintf(stderr, "allreduce bench: wrong sum at element %zu: %g, expected %g\n", i, data[i], want);
      return false;
    }
  }
  return true;
}

using SteadyClock = std::chrono::steady_clock;

// Runs `iteration` k times back to back; returns k + 1 timestamps (seconds from the start), so
// entry k - entry 0 is the loop's wall time and entry i+1 - entry i one iteration's.
inline std::vector<double> time_loop(int k, const std::function<void()>& iteration) {
  std::vector<double> stamps;
  stamps.reserve(static_cast<size_t>(k) + 1);
  const auto start = SteadyClock::now();
  stamps.push_back(0);
  for (int i = 0; i < k; ++i) {
    iteration();
    stamps.push_back(std::chrono::duration<double>(SteadyClock::now() - start).count());
  }
  return stamps;
}

struct Summary {
  double avg_s = 0;
  double min_s = 0;
};

// per_rank[r] = time_loop() stamps of rank r. The slowest rank decides each number.
inline Summary summarize(const std::vector<std::vector<double>>& per_rank) {
  Summary s;
  const size_t k = per_rank.at(0).size() - 1;
  for (const auto& stamps : per_rank) s.avg_s = std::max(s.avg_s, stamps.back() / static_cast<double>(k));
  s.min_s = 1e300;
  for (size_t i = 0; i < k; ++i) {
    double slowest = 0;
    for (const auto& stamps : per_rank) slowest = std::max(slowest, stamps[i + 1] - stamps[i]);
    s.min_s = std::min(s.min_s, slowest);
  }
  return s;
}

inline void print_result(const std::string& label, int n, size_t bytes, int iters, const Summary& s) {
  const double algbw = static_cast<double>(bytes) / s.avg_s / 1e9;
  const double busbw = algbw * 2.0 * (n - 1) / n;
  std::printf("RESULT impl=%s n=%d bytes=%zu iters=%d avg_s=%.6f min_s=%.6f algbw_gbs=%.4f busbw_gbs=%.4f\n",
              label.c_str(), n, bytes, iters, s.avg_s, s.min_s, algbw, busbw);
  std::fflush(stdout);
}

// ---- processes and pipes -------------------------------------------------------------

inline void write_all(int fd, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t w = ::write(fd, p, bytes);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die(std::string("pipe write failed: ") + std::strerror(errno));
    p += w;
    bytes -= static_cast<size_t>(w);
  }
}

inline void read_all(int fd, void* data, size_t bytes) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t r = ::read(fd, p, bytes);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) die("a rank closed its pipe early (it failed; see its message above)");
    if (r < 0) die(std::string("pipe read failed: ") + std::strerror(errno));
    p += r;
    bytes -= static_cast<size_t>(r);
  }
}

template <typename T> void send_value(int fd, const T& v) { write_all(fd, &v, sizeof(T)); }
template <typename T> T recv_value(int fd) {
  T v{};
  read_all(fd, &v, sizeof(T));
  return v;
}

inline void send_doubles(int fd, const std::vector<double>& v) {
  send_value<uint32_t>(fd, static_cast<uint32_t>(v.size()));
  write_all(fd, v.data(), v.size() * sizeof(double));
}

inline std::vector<double> recv_doubles(int fd) {
  const uint32_t n = recv_value<uint32_t>(fd);
  if (n > 1000000) die("a rank sent an implausible count of timestamps");
  std::vector<double> v(n);
  read_all(fd, v.data(), n * sizeof(double));
  return v;
}

// One forked rank as the parent sees it.
struct RankProcess {
  pid_t pid = -1;
  int to_child = -1;    // parent writes
  int from_child = -1;  // parent reads
};

// Forks n ranks; rank r runs body(r, read_fd, write_fd) and exits with its return value.
// Call before the parent starts any thread.
inline std::vector<RankProcess> fork_ranks(int n, const std::function<int(int, int, int)>& body) {
  std::vector<RankProcess> ranks;
  std::fflush(stdout);
  std::fflush(stderr);
  for (int r = 0; r < n; ++r) {
    int down[2], up[2];
    if (::pipe(down) != 0 || ::pipe(up) != 0) die(std::string("pipe: ") + std::strerror(errno));
    const pid_t pid = ::fork();
    if (pid < 0) die(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::close(down[1]);
      ::close(up[0]);
      for (const RankProcess& other : ranks) {
        ::close(other.to_child);
        ::close(other.from_child);
      }
      std::fflush(stdout);
      ::_exit(body(r, down[0], up[1]));
    }
    ::close(down[0]);
    ::close(up[1]);
    ranks.push_back(RankProcess{pid, down[1], up[0]});
  }
  return ranks;
}

// Waits for every rank; true when all exited with status 0.
inline bool wait_ranks(std::vector<RankProcess>& ranks) {
  bool ok = true;
  for (RankProcess& p : ranks) {
    ::close(p.to_child);
    ::close(p.from_child);
    int status = 0;
    if (::waitpid(p.pid, &status, 0) != p.pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      if (WIFSIGNALED(status)) {
        std::fprintf(stderr, "rank process %d: killed by signal %d\n", static_cast<int>(p.pid), WTERMSIG(status));
      }
      ok = false;
    }
  }
  return ok;
}

// Isolated iterations (every rank starts iteration i at the same steady_clock instant, so no
// iteration overlaps the next): per_rank[r][i] = rank r's end of iteration i minus that instant.
// The last rank to finish decides each iteration.
inline Summary summarize_isolated(const std::vector<std::vector<double>>& per_rank) {
  Summary s;
  s.min_s = 1e300;
  const size_t k = per_rank.at(0).size();
  for (size_t i = 0; i < k; ++i) {
    double slowest = 0;
    for (const auto& ends : per_rank) slowest = std::max(slowest, ends.at(i));
    s.avg_s += slowest / static_cast<double>(k);
    s.min_s = std::min(s.min_s, slowest);
  }
  return s;
}

// The parent's side of a forked run: for each buffer size, collect every rank's time_loop()
// stamps (or, `isolated`, its per-iteration end times) and print the RESULT line.
inline void collect_results(std::vector<RankProcess>& ranks, const BenchArgs& args, bool isolated = false) {
  for (size_t mib : args.mib) {
    std::vector<std::vector<double>> per_rank;
    for (RankProcess& p : ranks) per_rank.push_back(recv_doubles(p.from_child));
    print_result(args.label, args.ranks, floats_of_mib(mib) * sizeof(float), args.iters,
                 isolated ? summarize_isolated(per_rank) : summarize(per_rank));
  }
}

}  // namespace ravnest::bench
