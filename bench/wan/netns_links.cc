// netns_links: a userspace WAN emulator for benchmarks that must run unmodified programs (PyTorch DDP with Gloo,
// Ravnest's own ravnest-rt) over home-internet links on one machine whose kernel has no netem.
//
// Guarantees:
//  * N network namespaces PREFIX0..PREFIX(N-1); namespace i holds a TUN device PREFIXt<i> with address
//    10.77.0.(i+1)/24 (so the kernel routes 10.77.0.0/24 through it) and an up loopback. A program run with
//    `ip netns exec PREFIXi ...` reaches namespace j at 10.77.0.(j+1).
//  * Every IPv4 packet namespace i sends to 10.77.0.(j+1) goes through: i's upload queue (drop-tail, serialised
//    at the rate), the one-way delay, j's download queue (drop-tail, serialised at the rate), then j's TUN. The
//    round-trip time of an idle path is therefore 2 x delay (+ two serialisations); a bulk TCP flow gets the rate.
//    Packets to addresses outside the namespaces, and non-IPv4 packets, are dropped and counted.
//  * It prints one line starting with "ready:" on stdout once every namespace is up, runs until SIGINT/SIGTERM or
//    --seconds, prints per-node counters and removes every namespace it created, also after any error during
//    setup. A namespace name that already exists is refused (it is never deleted by us), naming the command that
//    removes it.
//  * Bounded: at most 64 nodes, each queue holds at most --queue-kb, packets at most 64 KiB, reads per wake-up
//    per device bounded, every sleep bounded (<= 200 ms) so the stop conditions are checked.
//
// Usage (as root): netns_links --nodes N --rate-mbit R --delay-ms D [--prefix rnw] [--seconds S] [--queue-kb Q]
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

namespace {

constexpr int kMaxNodes = 64;
constexpr size_t kMaxPacket = 65536;
constexpr int kReadsPerWake = 256;  // packets read from one device before the others get a turn

struct Options {
  int nodes = 0;
  double rate_mbit = 0;
  double delay_ms = 0;
  std::string prefix = "rnw";
  double seconds = 0;       // 0: until a signal
  int64_t queue_bytes = 0;  // 0: one bandwidth-delay product of the round trip, at least 64 KiB
};

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Prints the usage (after `why`, when there is an error) and returns the exit status: 2 for bad usage, 0 for --help.
int usage(const char* why) {
  if (why) std::fprintf(stderr, "netns_links: error: %s\n", why);
  std::fprintf(why ? stderr : stdout,
               "usage: netns_links --nodes N --rate-mbit R --delay-ms D [--prefix rnw] [--seconds S] [--queue-kb Q]\n"
               "  N in [2, %d]; R in (0, 100000] Mbit/s, each node's upload and download; D in [0, 10000] ms, one\n"
               "  way between any two nodes; S > 0 stops after S seconds (default: until SIGINT/SIGTERM); Q: drop-tail\n"
               "  limit of each queue in KiB (default: rate x 2 x delay, at least 64).\n",
               kMaxNodes);
  return why ? 2 : 0;
}

bool parse_double(const char* s, double* out) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

// Runs `ip ARGS...` with the default signal mask and waits for it; true when it exited 0.
bool run_ip(const std::vector<std::string>& args, bool quiet = false) {
  std::vector<std::string> argv{"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargs;
  for (auto& a : argv) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (quiet) posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, "ip", &actions, &attr, cargs.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  std::string line;
  for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
  if (rc != 0) {
    std::fprintf(stderr, "netns_links: error: cannot run `%s`: %s (is iproute2 installed?)\n", line.c_str(),
                 std::strerror(rc));
    return false;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (!quiet) std::fprintf(stderr, "netns_links: error: `%s` failed (status %d)\n", line.c_str(), status);
    return false;
  }
  return true;
}

// One direction of an access link: a FIFO that serialises packets at the rate. Departure times are computed on
// arrival (a virtual clock), so the backlog in bytes is (busy_until - t) x rate.
struct Serialiser {
  int64_t busy_until_ns = 0;
  uint64_t packets = 0, bytes = 0, dropped = 0;

  // The time the packet of `len` bytes that arrives at `t` has left the queue, or -1 when drop-tail drops it.
  int64_t admit(int64_t t, size_t len, double ns_per_byte, int64_t limit_bytes) {
    const int64_t start = busy_until_ns > t ? busy_until_ns : t;
    const double backlog = static_cast<double>(start - t) / ns_per_byte;
    if (backlog + static_cast<double>(len) > static_cast<double>(limit_bytes)) {
      ++dropped;
      return -1;
    }
    busy_until_ns = start + static_cast<int64_t>(std::llround(static_cast<double>(len) * ns_per_byte));
    ++packets;
    bytes += len;
    return busy_until_ns;
  }
};

struct Node {
  int tun_fd = -1;
  Serialiser up, down;
  uint64_t unroutable = 0, write_errors = 0;
};

// What happens next to a packet: it reaches the destination's download queue, or it is written to its TUN.
enum class Stage { kArriveDown, kDeliver };
struct Packet {
  Stage stage;
  int dst;
  std::vector<uint8_t> data;
};

// Owns the namespaces and devices; the destructor removes everything that was created, whatever happened.
class Emulator {
 public:
  explicit Emulator(Options opt) : opt_(std::move(opt)), nodes_(static_cast<size_t>(opt_.nodes)) {}
  ~Emulator() { teardown(); }

  bool setup() {
    if (geteuid() != 0) {
      std::fprintf(stderr, "netns_links: error: must run as root (it creates network namespaces and TUN devices); "
                           "run it with sudo\n");
      return false;
    }
    struct stat st{};
    if (stat("/dev/net/tun", &st) != 0) {
      std::fprintf(stderr, "netns_links: error: /dev/net/tun is missing: load the module (modprobe tun) or create "
                           "the node (mkdir -p /dev/net && mknod /dev/net/tun c 10 200)\n");
      return false;
    }
    for (int i = 0; i < opt_.nodes; ++i) {
      const std::string ns = ns_name(i);
      if (run_ip({"netns", "exec", ns, "true"}, /*quiet=*/true)) {
        std::fprintf(stderr, "netns_links: error: network namespace %s already exists (left by an earlier run?); "
                             "remove it with `ip netns del %s` or choose another --prefix\n", ns.c_str(), ns.c_str());
        return false;
      }
      if (!run_ip({"netns", "add", ns})) return false;
      created_.push_back(ns);
      // The device is created here (in our namespace) and moved; its file descriptor stays attached to it.
      const std::string dev = dev_name(i);
      int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) {
        std::fprintf(stderr, "netns_links: error: open /dev/net/tun: %s\n", std::strerror(errno));
        return false;
      }
      nodes_[static_cast<size_t>(i)].tun_fd = fd;
      ifreq ifr{};
      ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
      std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", dev.c_str());
      if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        std::fprintf(stderr, "netns_links: error: creating TUN device %s: %s (does a device of that name exist? "
                             "choose another --prefix)\n", dev.c_str(), std::strerror(errno));
        return false;
      }
      const std::string addr = "10.77.0." + std::to_string(i + 1) + "/24";
      if (!run_ip({"link", "set", dev, "netns", ns}) ||
          !run_ip({"-n", ns, "link", "set", "lo", "up"}) ||
          !run_ip({"-n", ns, "addr", "add", addr, "dev", dev}) ||
          !run_ip({"-n", ns, "link", "set", dev, "txqueuelen", "1000", "up"}))
        return false;
    }
    return true;
  }

  // Forwards packets until a stop condition; false on an unrecoverable error (which it names).
  bool run() {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGHUP);
    sig_fd_ = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
    timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (sig_fd_ < 0 || timer_fd_ < 0 || epoll_fd_ < 0) {
      std::fprintf(stderr, "netns_links: error: signalfd/timerfd/epoll: %s\n", std::strerror(errno));
      return false;
    }
    auto watch = [&](int fd, uint64_t tag) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = tag;
      return epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0;
    };
    constexpr uint64_t kSignalTag = 1000, kTimerTag = 1001;
    bool ok = watch(sig_fd_, kSignalTag) && watch(timer_fd_, kTimerTag);
    for (int i = 0; i < opt_.nodes && ok; ++i) ok = watch(nodes_[static_cast<size_t>(i)].tun_fd, static_cast<uint64_t>(i));
    if (!ok) {
      std::fprintf(stderr, "netns_links: error: epoll_ctl: %s\n", std::strerror(errno));
      return false;
    }
    ns_per_byte_ = 8e9 / (opt_.rate_mbit * 1e6);
    delay_ns_ = static_cast<int64_t>(std::llround(opt_.delay_ms * 1e6));
    const int64_t start = now_ns();
    const int64_t end = opt_.seconds > 0 ? start + static_cast<int64_t>(opt_.seconds * 1e9) : INT64_MAX;
    std::printf("ready: %d namespaces %s0..%s%d at 10.77.0.1..10.77.0.%d/24, %.3g Mbit/s up and down per node, "
                "%.3g ms one way, queues of %lld bytes\n",
                opt_.nodes, opt_.prefix.c_str(), opt_.prefix.c_str(), opt_.nodes - 1, opt_.nodes, opt_.rate_mbit,
                opt_.delay_ms, static_cast<long long>(opt_.queue_bytes));
    std::fflush(stdout);
    std::vector<uint8_t> buf(kMaxPacket);
    epoll_event events[kMaxNodes + 2];
    while (true) {
      int64_t now = now_ns();
      if (now >= end) break;
      run_due(now);
      arm_timer();
      // Sleep until a packet, a signal or the next due event; at most 200 ms so --seconds is honoured.
      int n = epoll_wait(epoll_fd_, events, kMaxNodes + 2, 200);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::fprintf(stderr, "netns_links: error: epoll_wait: %s\n", std::strerror(errno));
        return false;
      }
      for (int e = 0; e < n; ++e) {
        const uint64_t tag = events[e].data.u64;
        if (tag == kSignalTag) {
          signalfd_siginfo si{};
          if (read(sig_fd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si))
            std::fprintf(stderr, "netns_links: signal %u, stopping\n", si.ssi_signo);
          return true;
        }
        if (tag == kTimerTag) {
          uint64_t expirations = 0;
          (void)!read(timer_fd_, &expirations, sizeof expirations);
          continue;
        }
        read_device(static_cast<int>(tag), buf);
      }
    }
    return true;
  }

  void print_counters() const {
    for (int i = 0; i < opt_.nodes; ++i) {
      const Node& n = nodes_[static_cast<size_t>(i)];
      std::printf("node %d (10.77.0.%d): up %llu packets %llu bytes %llu dropped; down %llu packets %llu bytes %llu "
                  "dropped; %llu unroutable, %llu write errors\n",
                  i, i + 1, static_cast<unsigned long long>(n.up.packets), static_cast<unsigned long long>(n.up.bytes),
                  static_cast<unsigned long long>(n.up.dropped), static_cast<unsigned long long>(n.down.packets),
                  static_cast<unsigned long long>(n.down.bytes), static_cast<unsigned long long>(n.down.dropped),
                  static_cast<unsigned long long>(n.unroutable), static_cast<unsigned long long>(n.write_errors));
    }
    std::fflush(stdout);
  }

 private:
  std::string ns_name(int i) const { return opt_.prefix + std::to_string(i); }
  std::string dev_name(int i) const { return opt_.prefix + "t" + std::to_string(i); }

  // Reads up to kReadsPerWake packets from node `src`'s device into its upload queue.
  void read_device(int src, std::vector<uint8_t>& buf) {
    Node& node = nodes_[static_cast<size_t>(src)];
    for (int k = 0; k < kReadsPerWake; ++k) {
      ssize_t got = read(node.tun_fd, buf.data(), buf.size());
      if (got <= 0) return;  // EAGAIN: drained
      const size_t len = static_cast<size_t>(got);
      // IPv4 only: version 4, destination 10.77.0.(j+1) of another node.
      if (len < 20 || (buf[0] >> 4) != 4 || buf[16] != 10 || buf[17] != 77 || buf[18] != 0 || buf[19] < 1 ||
          buf[19] > opt_.nodes || buf[19] - 1 == src) {
        ++node.unroutable;
        continue;
      }
      const int dst = buf[19] - 1;
      const int64_t left = node.up.admit(now_ns(), len, ns_per_byte_, opt_.queue_bytes);
      if (left < 0) continue;  // upload queue full
      schedule(left + delay_ns_, Packet{Stage::kArriveDown, dst, std::vector<uint8_t>(buf.begin(), buf.begin() + got)});
    }
  }

  void schedule(int64_t t, Packet p) { events_.emplace(std::make_pair(t, seq_++), std::move(p)); }

  // Moves every packet whose time has come one stage on; times are the scheduled ones, not `now`, so a late
  // wake-up does not stretch the emulated link.
  void run_due(int64_t now) {
    while (!events_.empty() && events_.begin()->first.first <= now) {
      auto handle = events_.extract(events_.begin());
      const int64_t t = handle.key().first;
      Packet& p = handle.mapped();
      Node& dst = nodes_[static_cast<size_t>(p.dst)];
      if (p.stage == Stage::kArriveDown) {
        const int64_t left = dst.down.admit(t, p.data.size(), ns_per_byte_, opt_.queue_bytes);
        if (left < 0) continue;  // download queue full
        p.stage = Stage::kDeliver;
        schedule(left, std::move(p));
      } else if (write(dst.tun_fd, p.data.data(), p.data.size()) != static_cast<ssize_t>(p.data.size())) {
        ++dst.write_errors;
      }
    }
  }

  void arm_timer() {
    itimerspec its{};
    if (!events_.empty()) {
      const int64_t t = std::max<int64_t>(events_.begin()->first.first, 1);
      its.it_value.tv_sec = t / 1'000'000'000;
      its.it_value.tv_nsec = t % 1'000'000'000;
    }
    timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr);  // all zero: disarmed
  }

  void teardown() {
    for (int* fd : {&sig_fd_, &timer_fd_, &epoll_fd_})
      if (*fd >= 0) close(std::exchange(*fd, -1));
    for (auto& n : nodes_)
      if (n.tun_fd >= 0) close(std::exchange(n.tun_fd, -1));  // a non-persistent TUN goes with its last fd
    for (const auto& ns : created_) run_ip({"netns", "del", ns});
    created_.clear();
  }

  Options opt_;
  std::vector<Node> nodes_;
  std::vector<std::string> created_;
  std::map<std::pair<int64_t, uint64_t>, Packet> events_;  // (time, sequence) -> packet: FIFO among equal times
  uint64_t seq_ = 0;
  double ns_per_byte_ = 0;
  int64_t delay_ns_ = 0;
  int sig_fd_ = -1, timer_fd_ = -1, epoll_fd_ = -1;
};

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  double queue_kb = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return usage(nullptr);
    if (i + 1 >= argc) return usage((arg + " needs a value").c_str());
    const char* v = argv[++i];
    double x = 0;
    if (arg == "--nodes") {
      if (!parse_double(v, &x) || x != std::floor(x) || x < 2 || x > kMaxNodes)
        return usage("--nodes needs an integer in [2, 64]");
      opt.nodes = static_cast<int>(x);
    } else if (arg == "--rate-mbit") {
      if (!parse_double(v, &x) || x <= 0 || x > 100000) return usage("--rate-mbit needs a number in (0, 100000]");
      opt.rate_mbit = x;
    } else if (arg == "--delay-ms") {
      if (!parse_double(v, &x) || x < 0 || x > 10000) return usage("--delay-ms needs a number in [0, 10000]");
      opt.delay_ms = x;
    } else if (arg == "--seconds") {
      if (!parse_double(v, &x) || x <= 0 || x > 1e7) return usage("--seconds needs a number in (0, 1e7]");
      opt.seconds = x;
    } else if (arg == "--queue-kb") {
      if (!parse_double(v, &x) || x < 4 || x > 1048576) return usage("--queue-kb needs a number in [4, 1048576]");
      queue_kb = x;
    } else if (arg == "--prefix") {
      opt.prefix = v;
      bool good = !opt.prefix.empty() && opt.prefix.size() <= 8;
      for (char c : opt.prefix) good = good && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
      if (!good) return usage("--prefix needs 1 to 8 characters of [a-z0-9_] (device names are prefix + t + index)");
    } else {
      return usage(("unknown option " + arg).c_str());
    }
  }
  if (opt.nodes == 0 || opt.rate_mbit == 0) return usage("--nodes and --rate-mbit are required");
  const double bdp = opt.rate_mbit * 1e6 / 8 * 2 * opt.delay_ms / 1e3;
  opt.queue_bytes = static_cast<int64_t>(queue_kb > 0 ? queue_kb * 1024 : std::max(bdp, 65536.0));

  // SIGINT/SIGTERM are taken through a signalfd; blocked from here on so they cannot kill us mid-setup and leave
  // namespaces behind (a signal during setup is seen by the first loop iteration).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGHUP);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Emulator emu(opt);
  if (!emu.setup()) return 1;  // the destructor removes what setup created
  const bool ok = emu.run();
  emu.print_counters();
  return ok ? 0 : 1;
}
