// The link relay: see link_relay.h for what it guarantees.
//
// Per connection one thread runs an event loop over the two sockets. Each
// direction reads chunks from its source socket, stamps each with the time it is
// due at the far end (rate limiter departure + delay [+ one RTO if lost], never
// before the previous chunk), queues it, and writes due chunks to its destination
// socket. A FIN or RESET marker travels through the same queue, so closes keep
// their place behind the data and take the delay too.
#include "runtime/netem/link_relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "common/log.h"

namespace ravnest::rt {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration;
using std::chrono::duration_cast;

constexpr auto kTick = std::chrono::milliseconds(100);  // bound of every wait: the stop flag is rechecked
constexpr size_t kMinChunk = 1500;
constexpr size_t kMaxChunk = 64 * 1024;
constexpr double kSegmentBytes = 1448;  // TCP payload of a 1500-byte packet
constexpr double kMaxRateBps = 1e12;
constexpr auto kMaxDelay = std::chrono::seconds(60);
constexpr double kMinQueueBytes = 1 << 20;
constexpr double kMaxQueueBytes = 64 << 20;

std::string errno_str(int err) {
  return std::strerror(err);
}

// Token bucket with debt: tokens may go negative, and a chunk leaves when the debt
// it adds is paid back at the rate. FIFO order makes this the departure time of a
// link that serializes bytes at the rate after an idle burst of `burst_` bytes.
class TokenBucket {
 public:
  explicit TokenBucket(double rate_bps)
      : bytes_per_s_(rate_bps / 8), burst_(std::max(16.0 * 1024, bytes_per_s_ * 0.002)), tokens_(burst_) {}

  // A scheduled change of the rate (same burst); the tokens so far stay.
  void set_rate(double rate_bps) { bytes_per_s_ = rate_bps / 8; }

  Clock::time_point depart(size_t bytes, Clock::time_point now) {
    if (bytes_per_s_ <= 0) return now;
    tokens_ = std::min(burst_, tokens_ + duration<double>(now - last_).count() * bytes_per_s_);
    last_ = now;
    tokens_ -= static_cast<double>(bytes);
    if (tokens_ >= 0) return now;
    return now + duration_cast<Clock::duration>(duration<double>(-tokens_ / bytes_per_s_));
  }

 private:
  double bytes_per_s_;
  double burst_;
  double tokens_;
  Clock::time_point last_ = Clock::now();
};

enum class ChunkKind { kData, kFin, kReset };

struct Chunk {
  ChunkKind kind = ChunkKind::kData;
  Clock::time_point due;
  std::vector<char> bytes;
  size_t offset = 0;  // bytes already written
};

// The scheduled changes of a link, on the steady clock.
struct Schedule {
  struct Window {
    Clock::time_point begin, end;  // end == max: to the end
    double rate_scale = 1;
  };
  std::vector<Window> windows;

  Schedule() = default;
  Schedule(const std::vector<LinkChange>& changes, Clock::time_point start) {
    for (const LinkChange& c : changes)
      windows.push_back({start + c.at, c.duration.count() > 0 ? start + c.at + c.duration : Clock::time_point::max(),
                         c.rate_scale});
  }
  double scale_at(Clock::time_point t) const {
    double s = 1;
    for (const Window& w : windows)
      if (w.begin <= t && t < w.end) s *= w.rate_scale;
    return s;
  }
  // The first time >= t at which the link is up (t itself when it is).
  Clock::time_point up_from(Clock::time_point t) const {
    for (int guard = 0; guard < 64; ++guard) {
      bool moved = false;
      for (const Window& w : windows)
        if (w.rate_scale == 0 && w.begin <= t && t < w.end) t = w.end, moved = true;
      if (!moved) break;
    }
    return t;
  }
};

// One direction of a connection: src -> queue -> dst.
struct Direction {
  Direction(const LinkDirection& l, int src_fd, int dst_fd, uint64_t seed, std::chrono::milliseconds rto_ms,
            std::atomic<uint64_t>* counter, std::atomic<uint64_t>* lost_counter, const Schedule* sched)
      : schedule(sched),
        link(l),
        src(src_fd),
        dst(dst_fd),
        bucket(l.rate_bps),
        rng(seed),
        rto(rto_ms),
        written(counter),
        lost(lost_counter) {
    double bytes_per_s = l.rate_bps / 8;
    chunk_size = l.rate_bps > 0
                     ? static_cast<size_t>(std::clamp(bytes_per_s / 1000, double(kMinChunk), double(kMaxChunk)))
                     : kMaxChunk;
    double bdp = l.rate_bps > 0 ? bytes_per_s * duration<double>(l.delay).count() : kMaxQueueBytes;
    queue_cap = static_cast<size_t>(std::clamp(2 * bdp + kMinQueueBytes, kMinQueueBytes, kMaxQueueBytes));
  }

  bool wants_read() const { return reading && queued_bytes < queue_cap; }
  bool head_due(Clock::time_point now) const { return !queue.empty() && queue.front().due <= now; }

  // Queues a chunk (or marker) read at `now`; delivery order is read order.
  void push(ChunkKind kind, std::vector<char> bytes, Clock::time_point now) {
    Clock::time_point due = now;
    if (kind == ChunkKind::kData) {
      if (schedule && !schedule->windows.empty()) {
        const double scale = schedule->scale_at(now);
        if (scale > 0) bucket.set_rate(link.rate_bps * scale);
      }
      due = bucket.depart(bytes.size(), now);
      if (schedule) due = schedule->up_from(due);  // an outage holds what would leave inside it
      double segments = std::ceil(static_cast<double>(bytes.size()) / kSegmentBytes);
      if (link.loss > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < 1 - std::pow(1 - link.loss, segments)) {
        due += rto;
        lost->fetch_add(1);
      }
    }
    due = std::max(due + link.delay, last_due);
    last_due = due;
    queued_bytes += bytes.size();
    queue.push_back(Chunk{kind, due, std::move(bytes), 0});
  }

  const Schedule* schedule;
  LinkDirection link;
  int src, dst;
  TokenBucket bucket;
  std::mt19937_64 rng;
  std::chrono::milliseconds rto;
  std::atomic<uint64_t>* written;
  std::atomic<uint64_t>* lost;
  size_t chunk_size = kMaxChunk;
  size_t queue_cap = 0;
  std::deque<Chunk> queue;
  size_t queued_bytes = 0;
  Clock::time_point last_due{};
  bool reading = true;         // src has not ended or failed
  bool fin_delivered = false;  // dst got our FIN
  bool reset_queued = false;
};

void set_socket_options(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // the relay does its own pacing
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// Closes with RST, the way a real stack tells the far side the connection died.
void abort_socket(int fd) {
  if (fd < 0) return;
  linger lin{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
  close(fd);
}

Result<sockaddr_in> resolve(const std::string& host, uint16_t port, const std::string& what) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || !res) {
    return error(Code::kInvalidArgument, what, ": cannot resolve host '", host, "' (", gai_strerror(rc),
                 "); give an IPv4 address such as 127.0.0.1");
  }
  sockaddr_in addr;
  std::memcpy(&addr, res->ai_addr, sizeof addr);
  freeaddrinfo(res);
  addr.sin_port = htons(port);
  return addr;
}

// A steady-clock wait bounded by kTick, for ppoll.
timespec wait_spec(Clock::duration wait) {
  wait = std::clamp<Clock::duration>(wait, Clock::duration::zero(), kTick);
  auto ns = duration_cast<std::chrono::nanoseconds>(wait).count();
  return timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
}

uint64_t mix_seed(uint64_t seed, uint64_t index) {  // splitmix64
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

std::string LinkChange::describe() const {
  const std::string when = str_cat("from ", at.count() / 1000.0, " s", duration.count() > 0
                                                                          ? str_cat(" for ", duration.count() / 1000.0, " s")
                                                                          : std::string());
  return rate_scale == 0 ? "down " + when : str_cat("rate x", rate_scale, " ", when);
}

std::string LinkDirection::describe() const {
  std::string rate = rate_bps > 0 ? str_cat(rate_bps / 1e6, " Mbit/s") : std::string("unlimited");
  return str_cat(rate, ", ", delay.count() / 1000.0, " ms, loss ", loss * 100, "%");
}

Status validate_link_direction(const LinkDirection& d, const std::string& what) {
  if (!std::isfinite(d.rate_bps) || d.rate_bps < 0 || d.rate_bps > kMaxRateBps) {
    return error(Code::kInvalidArgument, what, ": rate ", d.rate_bps, " bit/s is out of range; give 0 (unlimited) to ",
                 kMaxRateBps, " bit/s");
  }
  if (d.delay.count() < 0 || d.delay > kMaxDelay) {
    return error(Code::kInvalidArgument, what, ": delay ", d.delay.count(), " us is out of range; give 0 to 60 s");
  }
  if (!std::isfinite(d.loss) || d.loss < 0 || d.loss >= 1) {
    return error(Code::kInvalidArgument, what, ": loss ", d.loss, " is out of range; give a probability in [0, 1)");
  }
  return ok_status();
}

struct LinkRelay::Impl {
  struct Connection {
    std::thread thread;
    std::atomic<bool> finished{false};
  };

  LinkRelayOptions options;
  Schedule schedule;  // options.changes from the relay's start
  sockaddr_in target{};
  int listen_fd = -1;
  uint16_t port = 0;
  std::atomic<bool> stop{false};
  std::thread accept_thread;
  std::list<Connection> connections;  // touched by the accept thread, then by the destructor
  std::atomic<uint64_t> accepted{0}, open{0}, forward_bytes{0}, backward_bytes{0}, lost_chunks{0};

  void accept_loop();
  int connect_target();
  void run_connection(int client, uint64_t index);
  void reap(bool all);
};

void LinkRelay::Impl::reap(bool all) {
  for (auto it = connections.begin(); it != connections.end();) {
    if (all || it->finished.load()) {
      it->thread.join();
      it = connections.erase(it);
    } else {
      ++it;
    }
  }
}

void LinkRelay::Impl::accept_loop() {
  while (!stop.load()) {
    reap(false);
    pollfd p{listen_fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(kTick.count())) <= 0) continue;
    int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // EAGAIN, ECONNABORTED, EMFILE: try again next tick
    set_socket_options(fd);
    uint64_t index = accepted.fetch_add(1);
    open.fetch_add(1);
    Connection& c = connections.emplace_back();
    c.thread = std::thread([this, fd, index, &c] {
      run_connection(fd, index);
      open.fetch_sub(1);
      c.finished.store(true);
    });
  }
}

// Connects to the target, retrying refusals (it may still be starting) until
// connect_timeout. Returns -1 on failure or stop.
int LinkRelay::Impl::connect_target() {
  auto deadline = Clock::now() + options.connect_timeout;
  auto pause = std::chrono::milliseconds(20);
  while (!stop.load()) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int err = 0;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) {
      err = errno;
      // Wait for the non-blocking connect to finish, in ticks.
      while (err == EINPROGRESS && !stop.load() && Clock::now() < deadline) {
        pollfd p{fd, POLLOUT, 0};
        if (poll(&p, 1, static_cast<int>(kTick.count())) > 0) {
          socklen_t len = sizeof err;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        }
      }
    }
    if (err == 0) {
      set_socket_options(fd);
      return fd;
    }
    close(fd);
    if (err != ECONNREFUSED || Clock::now() + pause > deadline) {
      RN_LOG_WARN(options.name, ": cannot connect to the target ", inet_ntoa(target.sin_addr), ":",
                  ntohs(target.sin_port), ": ", errno_str(err), "; resetting the relayed connection");
      return -1;
    }
    std::this_thread::sleep_for(pause);  // at most 500 ms, then the stop flag is rechecked
    pause = std::min(pause * 2, std::chrono::milliseconds(500));
  }
  return -1;
}

void LinkRelay::Impl::run_connection(int client, uint64_t index) {
  prctl(PR_SET_TIMERSLACK, 1000UL);  // wake within 1 us of a due time, not the default 50 us
  int server = connect_target();
  if (server < 0) {
    abort_socket(client);
    return;
  }
  auto rto = options.rto;
  if (rto.count() == 0) {
    rto = std::chrono::milliseconds(200) +
          duration_cast<std::chrono::milliseconds>(options.forward.delay + options.backward.delay);
  }
  Direction fwd(options.forward, client, server, mix_seed(options.seed, 2 * index), rto, &forward_bytes, &lost_chunks,
                &schedule);
  Direction bwd(options.backward, server, client, mix_seed(options.seed, 2 * index + 1), rto, &backward_bytes,
                &lost_chunks, &schedule);
  Direction* dirs[2] = {&fwd, &bwd};
  auto reverse_of = [&](Direction* d) { return d == &fwd ? &bwd : &fwd; };
  // The far side of `d` is gone: stop it, and send a reset the other way.
  auto fail = [&](Direction* d, Clock::time_point now) {
    d->reading = false;
    d->queue.clear();
    d->queued_bytes = 0;
    Direction* r = reverse_of(d);
    r->reading = false;
    if (!r->reset_queued) {
      r->reset_queued = true;
      r->push(ChunkKind::kReset, {}, now);
    }
  };
  std::vector<char> buffer(kMaxChunk);
  bool aborted = false;

  while (!stop.load() && !aborted) {
    // Write every due chunk; a full socket (EAGAIN) waits for POLLOUT below.
    auto now = Clock::now();
    for (Direction* d : dirs) {
      while (!aborted && d->head_due(now)) {
        Chunk& c = d->queue.front();
        if (c.kind == ChunkKind::kReset) {
          aborted = true;
          break;
        }
        if (c.kind == ChunkKind::kFin) {
          shutdown(d->dst, SHUT_WR);
          d->fin_delivered = true;
          d->queue.pop_front();
          continue;
        }
        ssize_t n = send(d->dst, c.bytes.data() + c.offset, c.bytes.size() - c.offset, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
        if (n <= 0) {
          fail(d, now);
          break;
        }
        c.offset += static_cast<size_t>(n);
        d->written->fetch_add(static_cast<uint64_t>(n));
        if (c.offset == c.bytes.size()) {
          d->queued_bytes -= c.bytes.size();
          d->queue.pop_front();
        }
      }
    }
    if (aborted) break;
    if (fwd.fin_delivered && bwd.fin_delivered && fwd.queue.empty() && bwd.queue.empty()) break;

    // Wait for input, room to write, or the next chunk's due time (at most one tick).
    pollfd fds[2] = {{client, 0, 0}, {server, 0, 0}};
    auto wait = Clock::duration(kTick);
    for (Direction* d : dirs) {
      pollfd& in = d->src == client ? fds[0] : fds[1];
      pollfd& out = d->dst == client ? fds[0] : fds[1];
      if (d->wants_read()) in.events |= POLLIN;
      if (d->head_due(now))
        out.events |= POLLOUT;
      else if (!d->queue.empty())
        wait = std::min(wait, d->queue.front().due - now);
    }
    for (pollfd& p : fds)
      if (p.events == 0) p.fd = -1;  // else a hung-up socket we do not read now would wake us at once, again and again
    timespec ts = wait_spec(wait);
    if (ppoll(fds, 2, &ts, nullptr) <= 0) continue;

    // Read what arrived.
    now = Clock::now();
    for (Direction* d : dirs) {
      const pollfd& in = d->src == client ? fds[0] : fds[1];
      if (!d->wants_read() || !(in.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = recv(d->src, buffer.data(), d->chunk_size, 0);
      if (n > 0) {
        d->push(ChunkKind::kData, std::vector<char>(buffer.begin(), buffer.begin() + n), now);
      } else if (n == 0) {  // orderly close: forward the FIN behind the data
        d->reading = false;
        d->push(ChunkKind::kFin, {}, now);
      } else if (errno != EAGAIN && errno != EINTR) {  // reset: the reset travels the same way
        d->reading = false;
        if (!d->reset_queued) {
          d->reset_queued = true;
          d->push(ChunkKind::kReset, {}, now);
        }
        reverse_of(d)->reading = false;
      }
    }
  }
  if (aborted || stop.load()) {
    abort_socket(client);
    abort_socket(server);
  } else {
    close(client);
    close(server);
  }
}

LinkRelay::LinkRelay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<LinkRelay>> LinkRelay::start(LinkRelayOptions options) {
  RN_RETURN_IF_ERROR(validate_link_direction(options.forward, options.name + " (forward)"));
  RN_RETURN_IF_ERROR(validate_link_direction(options.backward, options.name + " (backward)"));
  if (options.target_port == 0) {
    return error(Code::kInvalidArgument, options.name, ": no target port; give the port the target listens on");
  }
  auto impl = std::make_unique<Impl>();
  RN_ASSIGN_OR_RETURN(impl->target, resolve(options.target_host, options.target_port, options.name + " target"));
  RN_ASSIGN_OR_RETURN(sockaddr_in bind_addr, resolve(options.listen_host, options.listen_port, options.name));
  for (const LinkChange& change : options.changes)
    if (change.at.count() < 0 || change.duration.count() < 0 || !std::isfinite(change.rate_scale) ||
        change.rate_scale < 0 || change.rate_scale > 1e6)
      return error(Code::kInvalidArgument, options.name, ": change '", change.describe(),
                   "' is out of range; give at and duration >= 0 and a rate scale in [0, 1e6] (0: link down)");
  impl->options = std::move(options);
  impl->schedule = Schedule(impl->options.changes, Clock::now());
  const std::string& name = impl->options.name;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return error(Code::kNetwork, name, ": socket() failed: ", errno_str(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&bind_addr), sizeof bind_addr) != 0 || listen(fd, 64) != 0) {
    int err = errno;
    close(fd);
    return error(Code::kNetwork, name, ": cannot listen on ", impl->options.listen_host, ":", impl->options.listen_port,
                 ": ", errno_str(err), "; pick another port (0 picks a free one)");
  }
  socklen_t len = sizeof bind_addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bind_addr), &len);
  impl->listen_fd = fd;
  impl->port = ntohs(bind_addr.sin_port);
  Impl* raw = impl.get();
  impl->accept_thread = std::thread([raw] { raw->accept_loop(); });
  return std::unique_ptr<LinkRelay>(new LinkRelay(std::move(impl)));
}

LinkRelay::~LinkRelay() {
  impl_->stop.store(true);
  impl_->accept_thread.join();  // within one tick
  impl_->reap(true);            // each connection ends within one tick (or one connect retry pause)
  close(impl_->listen_fd);
}

uint16_t LinkRelay::port() const {
  return impl_->port;
}

std::string LinkRelay::address() const {
  return str_cat(impl_->options.listen_host, ":", impl_->port);
}

LinkRelayStats LinkRelay::stats() const {
  return LinkRelayStats{impl_->accepted.load(), impl_->open.load(), impl_->forward_bytes.load(),
                        impl_->backward_bytes.load(), impl_->lost_chunks.load()};
}

}  // namespace ravnest::rt
