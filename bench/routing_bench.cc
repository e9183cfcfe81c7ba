// ravnest-routing-bench: ring all-reduce time with the naive ring order (member index
// order) against the order chosen by plan_ring_order() from probed links, when one pair
// of members is joined by a slow link.
//
// Guarantees: N members as threads of one process, each with its own Transport on
// 127.0.0.1; every pair (i < j) is joined through its own LinkRelay (i dials j through
// it), both directions at --fast-mbit except the pair (1, 2) at --slow-mbit, all with
// --delay-ms one way. The probe runs once (probe_links), the order is planned from hop
// times for one segment (buffer bytes / N), then each order runs 1 warm-up and --reps
// timed all-reduces (sum, float32) on its own tag; prints the probed matrix, both orders
// and their median (min, max) times. Exits non-zero when anything fails.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "runtime/collectives/link_probe.h"
#include "runtime/collectives/ring_allreduce.h"
#include "runtime/collectives/ring_order.h"
#include "runtime/netem/link_relay.h"

namespace ravnest::rt {
namespace {

struct Args {
  size_t members = 4;
  double slow_mbit = 20;
  double fast_mbit = 200;
  int delay_ms = 5;
  size_t floats = size_t{1} << 20;
  int reps = 3;
};

bool parse(int argc, char** argv, Args* args) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    double value = std::atof(argv[i + 1]);
    if (flag == "--members")
      args->members = static_cast<size_t>(value);
    else if (flag == "--slow-mbit")
      args->slow_mbit = value;
    else if (flag == "--fast-mbit")
      args->fast_mbit = value;
    else if (flag == "--delay-ms")
      args->delay_ms = static_cast<int>(value);
    else if (flag == "--floats")
      args->floats = static_cast<size_t>(value);
    else if (flag == "--reps")
      args->reps = static_cast<int>(value);
    else
      return false;
  }
  return argc % 2 == 1 && args->members >= 3 && args->reps >= 1 && args->slow_mbit > 0 && args->fast_mbit > 0;
}

std::string id(size_t i) {
  return "m" + std::to_string(i);
}

// Runs fn(rank) on a thread per member; the first failure, if any.
Status on_every_member(size_t n, const std::function<Status(size_t)>& fn) {
  std::vector<Status> results(n);
  std::vector<std::thread> threads;
  for (size_t r = 0; r < n; ++r) threads.emplace_back([&, r] { results[r] = fn(r); });
  for (std::thread& t : threads) t.join();
  for (const Status& st : results) RN_RETURN_IF_ERROR(st);
  return ok_status();
}

// Seconds of each timed all-reduce over the ring `order` (1 warm-up first).
Result<std::vector<double>> time_order(const std::vector<std::unique_ptr<Transport>>& transports,
                                       const std::vector<size_t>& order, uint32_t tag, const Args& args) {
  const size_t n = transports.size();
  std::vector<std::string> ring_ids;
  for (size_t i = 0; i < n; ++i) ring_ids.push_back(id(i));
  ring_ids = ordered_members(ring_ids, order);
  std::vector<RingAllreduce> rings;
  for (size_t pos = 0; pos < n; ++pos) {
    RN_ASSIGN_OR_RETURN(RingAllreduce ring,
                        RingAllreduce::create(*transports[order[pos]], RingOptions{ring_ids, pos, tag}));
    rings.push_back(std::move(ring));
  }
  std::vector<std::vector<float>> buffers(n, std::vector<float>(args.floats, 1.0f));
  std::vector<double> seconds;
  for (int rep = 0; rep <= args.reps; ++rep) {
    auto start = Clock::now();
    RN_RETURN_IF_ERROR(on_every_member(n, [&](size_t pos) {
      return rings[pos].run(buffers[pos], ReduceOp::kSum, 1.0, deadline_after(std::chrono::minutes(5)));
    }));
    if (rep > 0) seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return seconds;
}

std::string describe(const std::vector<double>& s) {
  std::vector<double> sorted = s;
  std::sort(sorted.begin(), sorted.end());
  char line[128];
  std::snprintf(line, sizeof line, "%.3f s (min %.3f, max %.3f)", sorted[sorted.size() / 2], sorted.front(),
                sorted.back());
  return line;
}

std::string join(const std::vector<size_t>& order) {
  std::string out;
  for (size_t i : order) out += (out.empty() ? "" : " -> ") + id(i);
  return out;
}

int run(const Args& args) {
  const size_t n = args.members;
  std::vector<std::unique_ptr<LinkRelay>> relays;  // outlive the transports
  std::vector<std::unique_ptr<Transport>> transports;
  for (size_t i = 0; i < n; ++i) {
    TransportOptions options;
    options.node_id = id(i);
    options.run_id = "routing-bench";
    transports.push_back(std::make_unique<Transport>(std::move(options)));
    if (Status st = transports.back()->listen("127.0.0.1", 0); !st.ok())
      return std::fprintf(stderr, "%s\n", st.to_string().c_str()), 1;
  }
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = i + 1; j < n; ++j) {
      double mbit = (i == 1 && j == 2) ? args.slow_mbit : args.fast_mbit;
      LinkRelayOptions options;
      options.name = id(i) + " <-> " + id(j);
      options.target_port = transports[j]->port();
      options.forward = options.backward = LinkDirection{mbit * 1e6, std::chrono::milliseconds(args.delay_ms), 0};
      auto relay = LinkRelay::start(options);
      if (!relay.ok()) return std::fprintf(stderr, "%s\n", relay.status().to_string().c_str()), 1;
      Status st =
          transports[i]->connect(id(j), "127.0.0.1", relay.value()->port(), deadline_after(std::chrono::seconds(10)));
      if (!st.ok()) return std::fprintf(stderr, "%s\n", st.to_string().c_str()), 1;
      relays.push_back(std::move(relay).value());
    }
  }
  std::vector<std::string> members;
  for (size_t i = 0; i < n; ++i) members.push_back(id(i));
  std::vector<LinkMatrix> matrices(n);
  auto probe_start = Clock::now();
  Status probed = on_every_member(n, [&](size_t r) -> Status {
    RN_ASSIGN_OR_RETURN(
        matrices[r], probe_links(*transports[r], members, r, ProbeOptions{}, deadline_after(std::chrono::minutes(2))));
    return ok_status();
  });
  if (!probed.ok()) return std::fprintf(stderr, "%s\n", probed.to_string().c_str()), 1;
  double probe_s = std::chrono::duration<double>(Clock::now() - probe_start).count();
  std::printf("probe: %.2f s; measured Mbit/s (row = from), one-way latency ms:\n", probe_s);
  for (size_t i = 0; i < n; ++i) {
    std::printf("  %s:", id(i).c_str());
    for (size_t j = 0; j < n; ++j)
      std::printf(i == j ? "        -" : " %8.1f/%.1f", matrices[0].bandwidth(i, j) * 8 / 1e6,
                  matrices[0].latency(i, j) * 1e3);
    std::printf("\n");
  }
  auto plan = plan_ring_order(matrices[0].hop_times(args.floats * 4 / n));
  if (!plan.ok()) return std::fprintf(stderr, "%s\n", plan.status().to_string().c_str()), 1;
  std::vector<size_t> naive(n);
  for (size_t i = 0; i < n; ++i) naive[i] = i;
  auto naive_s = time_order(transports, naive, 1, args);
  auto adaptive_s = time_order(transports, plan.value().order, 2, args);
  if (!naive_s.ok() || !adaptive_s.ok()) {
    std::fprintf(stderr, "%s\n", (naive_s.ok() ? adaptive_s.status() : naive_s.status()).to_string().c_str());
    return 1;
  }
  std::printf("all-reduce of %zu floats (%.1f MiB), %d reps, median (min, max):\n", args.floats,
              static_cast<double>(args.floats) * 4 / (1 << 20), args.reps);
  std::printf("  naive    %s: %s\n", join(naive).c_str(), describe(naive_s.value()).c_str());
  std::printf("  adaptive %s: %s\n", join(plan.value().order).c_str(), describe(adaptive_s.value()).c_str());
  return 0;
}

}  // namespace
}  // namespace ravnest::rt

int main(int argc, char** argv) {
  ravnest::rt::Args args;
  if (!ravnest::rt::parse(argc, argv, &args)) {
    std::fprintf(stderr,
                 "usage: ravnest-routing-bench [--members N>=3] [--slow-mbit 20] [--fast-mbit 200] [--delay-ms 5] "
                 "[--floats 1048576] [--reps 3]\n");
    return 2;
  }
  return ravnest::rt::run(args);
}
