// Transport over standalone asio: one I/O thread, one connection object per socket,
// a mailbox for early frames (see transport.h; the protocol is docs/wire-protocol.md).
//
// Threading: every asio object and every Connection field is touched only on the
// I/O thread, except the direct-write state under Connection::direct_mu, with which
// send() may write a frame to the socket's descriptor itself (WireCodec::write_in_send).
// The peer table, the mailbox, the refusal list and the connection count are shared
// with caller threads and guarded by Impl::mu; callers wait on Impl::cv, which is
// notified whenever any of them changes (`queued` only when it reaches 0). Lock order:
// a Connection's direct_mu before Impl::mu, never the other way. The run id is written
// only by the I/O thread (when a joining node adopts one), under mu; the I/O thread reads
// it without the lock, callers (run_id()) with it.
//
// Liveness: one timer on the I/O thread ticks every heartbeat_interval. Each tick, per
// registered connection: fail it if nothing arrived for longer than its deadline, else
// queue a HEARTBEAT if nothing was written to it since the last tick. An arrival is any
// read system call that returned bytes (the completion condition of every async_read
// sees each one), so a long frame keeps its connection alive while it trickles in. The
// deadline is max(heartbeat_min_timeout, heartbeat_gap_factor x max_gap), where max_gap
// is the largest gap between arrivals, decayed with a half-life of 60 s (kGapHalfLifeMs)
// of connection time: per arrival, max_gap = max(gap, max_gap x 2^(-gap / half-life)).
// Decaying by the gap, not per event, makes the memory a matter of time, whether the
// arrivals were a few heartbeats or thousands of reads of one large frame.
#include "runtime/transport/transport.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <asio.hpp>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <thread>
#include <tuple>
#include <utility>

#include "common/json.h"
#include "common/log.h"
#include "runtime/transport/crc32c.h"

namespace ravnest::rt {
namespace {

using asio::ip::tcp;

// One gathered write carries at most this many queued frames (2 buffers each; Linux's
// IOV_MAX is 1024) and, beyond its first frame, at most this many bytes.
constexpr size_t kMaxFramesPerWrite = 64;
constexpr size_t kMaxBytesPerWrite = size_t{8} << 20;
// HELLO payloads are small JSON objects; refuse anything larger before allocating.
constexpr uint64_t kMaxHelloBytes = 64 * 1024;
constexpr size_t kMaxRefusalsKept = 64;
// A slow gap between arrivals weighs on the heartbeat deadline for about this long.
constexpr double kGapHalfLifeMs = 60000;

int64_t ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}

Tensor bytes_tensor(const std::string& bytes) {
  Tensor t = Tensor::empty(DType::kU8, {static_cast<int64_t>(bytes.size())});
  if (!bytes.empty()) std::memcpy(t.raw(), bytes.data(), bytes.size());
  return t;
}

std::string tensor_bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), t.bytes());
}

std::string endpoint_str(const tcp::endpoint& ep) {
  const auto addr = ep.address();
  std::string host = addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string();
  return host + ":" + std::to_string(ep.port());
}

// Low latency for small frames; keepalive so that a peer whose host vanished
// (no FIN, no RST) is noticed in about 25 s even when no data is in flight.
// Socket buffers are left to the kernel's autotuning.
void tune_socket(tcp::socket& socket) {
  asio::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  socket.set_option(asio::socket_base::keep_alive(true), ignored);
  int fd = socket.native_handle();
  int idle = 10, interval = 5, count = 3;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

// How a socket error reads to the user, for a peer described as "peer 'x' (addr)".
Status socket_failure(const std::string& who, const asio::error_code& ec) {
  if (ec == asio::error::eof) {
    return error(Code::kNetwork, who, " closed the connection without BYE (the process crashed, was killed, ",
                 "or closed its socket)");
  }
  if (ec == asio::error::connection_reset || ec == asio::error::broken_pipe) {
    return error(Code::kNetwork, who,
                 " reset the connection (the process crashed or its host dropped the link): ", ec.message());
  }
  return error(Code::kNetwork, "connection to ", who, " failed: ", ec.message());
}

using MailKey = std::tuple<std::string, uint16_t, uint64_t, uint32_t, uint32_t>;

MailKey mail_key(const std::string& peer, const FrameMeta& m) {
  return MailKey{peer, static_cast<uint16_t>(m.kind), m.step, m.microbatch, m.tensor_id};
}

// A received frame waiting in the mailbox: its payload as read, decoded by recv().
struct Arrived {
  Codec codec = Codec::kRaw;
  Shape shape;  // of the decoded tensor
  Tensor payload;
};

Result<Tensor> decode_arrived(Arrived a) {
  if (a.codec == Codec::kRaw) return std::move(a.payload);
  Tensor out = Tensor::empty(DType::kF32, a.shape);
  std::span<const uint8_t> bytes(a.payload.data<uint8_t>(), a.payload.bytes());
  RN_RETURN_IF_ERROR(decode(a.codec, bytes, out.data<float>(), out.numel()));
  return out;
}

// A posted receive (Transport::post_recv): where the payload of one frame must land. Shared by
// the poster and, while it reads the payload into `dst`, the I/O thread; fields guarded by Impl::mu.
struct Posted {
  enum class State { kWaiting, kReading, kDone };
  DType dtype = DType::kU8;
  std::span<std::byte> dst;
  State state = State::kWaiting;
  // False when the frame was already in the mailbox at post_recv(): wait_recv() copies that one,
  // and the I/O thread must not claim a later frame of the same key before it.
  bool from_io = true;
  Status status;  // kDone: the outcome
};

// One TCP connection: handshake state, the frame being read, the write queue.
struct Connection : std::enable_shared_from_this<Connection> {
  Connection(asio::io_context& io, tcp::socket s, std::string addr)
      : socket(std::move(s)), timer(io), address(std::move(addr)) {}

  std::string who() const {
    return peer_id.empty() ? "unidentified peer at " + address : "peer '" + peer_id + "' (" + address + ")";
  }

  struct OutFrame {
    FrameHeader header;
    Tensor payload;
    bool counted;  // a send() the caller may flush(); HELLO/BYE are not
    std::array<uint8_t, kFrameHeaderBytes> bytes{};
    std::chrono::system_clock::time_point write_begin{};  // set only for options.on_frame_written
    uint64_t raw_payload_bytes = 0;                       // counted frames: the payload's size with codec 0
    bool crc_done = false;  // header.payload_crc already set by send() (WireCodec::write_in_send)
    uint64_t skip = 0;      // bytes of header + payload that send() already wrote (first frame of `out` only)
  };

  tcp::socket socket;
  asio::steady_timer timer;  // handshake deadline
  std::string address;       // remote "ip:port"
  std::string peer_id;       // known after HELLO
  bool registered = false;   // in the peer table (handshake done)
  bool open = true;
  // Called instead of the peer-table update when the connection fails before registration.
  std::function<void(const Status&)> on_handshake_failure;

  std::array<uint8_t, kFrameHeaderBytes> in_header{};
  // The payload being read: its CRC-32C over the first in_crc_done bytes, extended as each read
  // system call returns (while the bytes are still in cache), and the posted receive it lands in.
  uint32_t in_crc = 0;
  size_t in_crc_done = 0;
  std::shared_ptr<Posted> reading_posted;
  std::deque<OutFrame> out;
  bool writing = false;
  bool close_after_write = false;

  // Shared with caller threads, for send()'s direct writes (WireCodec::write_in_send).
  // Frames reach the socket in the order they are decided under direct_mu: written by send()
  // itself only when no frame is with the I/O thread, else posted (under the lock) behind them.
  std::mutex direct_mu;
  bool direct_ok = false;  // registered and not closing; the socket stays open while this is true
  int fd = -1;             // the socket's descriptor, valid while direct_ok
  uint64_t io_frames = 0;  // frames handed to the I/O thread and not yet written or dropped
  // send() wrote to the socket since the last heartbeat tick (the tick clears it).
  bool direct_wrote = false;

  // Liveness (I/O thread only; meaningful once registered, reset then).
  Clock::time_point last_arrival{};  // the last read system call that returned bytes
  double max_gap_ms = 0;             // the largest gap between arrivals, decayed (see the file comment)
  bool wrote = false;                // the I/O thread started a write since the last heartbeat tick

  // Bytes arrived: the peer is alive.
  void note_arrival() {
    const Clock::time_point now = Clock::now();
    const double gap_ms = std::chrono::duration<double, std::milli>(now - last_arrival).count();
    max_gap_ms = std::max(gap_ms, max_gap_ms * std::exp2(-gap_ms / kGapHalfLifeMs));
    last_arrival = now;
  }
};

// Completion condition for async_read/async_write of `total` bytes: ask for all that is
// left in each system call. (asio's transfer_all() caps every call at 64 KiB, which turns a
// 256 KiB frame into five sendmsg/recvfrom calls with an epoll wait between them.)
// `reading`: the connection read from, told of every call that returned bytes but the last
// (asio does not consult the condition after the call that completes the transfer; the
// completion handler notes that one).
auto transfer_exactly_in_one_go(size_t total, Connection* reading = nullptr) {
  return [total, reading](const asio::error_code& ec, size_t done) -> size_t {
    if (ec) return 0;
    if (reading && done > 0) reading->note_arrival();
    return total - done;
  };
}

// Completion condition for reading a payload of `total` bytes into `base`: like
// transfer_exactly_in_one_go(total, c), and extends c->in_crc over the bytes each call returned
// (the handler checksums the bytes of the last call, which asio does not report here).
auto read_checksumming(size_t total, Connection* c, const std::byte* base) {
  c->in_crc = 0;
  c->in_crc_done = 0;
  return [total, c, base](const asio::error_code& ec, size_t done) -> size_t {
    if (ec) return 0;
    if (done > c->in_crc_done) {
      c->note_arrival();
      c->in_crc = crc32c(base + c->in_crc_done, done - c->in_crc_done, c->in_crc);
      c->in_crc_done = done;
    }
    return total - done;
  };
}

// The checksum of the whole payload once read: what read_checksumming() left, extended to `total`.
uint32_t finish_checksum(Connection& c, size_t total, const std::byte* base) {
  c.in_crc = crc32c(base + c.in_crc_done, total - c.in_crc_done, c.in_crc);
  c.in_crc_done = total;
  return c.in_crc;
}

struct Peer {
  std::string address;
  std::vector<std::shared_ptr<Connection>> conns;  // live; conns[0] carries our sends
  Status failure;                                  // set when the last connection went away
  uint64_t queued = 0;                             // counted frames handed to send() and not yet written
  uint64_t lost = 0;                               // counted frames dropped because their connection failed
  Status lost_reason;
  bool forgotten = false;  // forget_lost(): its losses are not reported until it connects again
};

}  // namespace

std::string FrameMeta::describe() const {
  FrameHeader h;
  h.kind = kind;
  h.step = step;
  h.microbatch = microbatch;
  h.tensor_id = tensor_id;
  return h.describe();
}

struct Transport::Impl {
  explicit Impl(TransportOptions o)
      : options(std::move(o)), run_id(options.run_id), work(asio::make_work_guard(io)), heartbeat_timer(io) {}

  TransportOptions options;
  std::string run_id;  // options.run_id or, for a joining node, the adopted one; see the file comment
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  asio::steady_timer heartbeat_timer;  // I/O thread only
  std::thread thread;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::atomic<uint16_t> bound_port{0};
  std::set<std::shared_ptr<Connection>> connections;  // I/O thread only: every open connection
  bool shutting_down = false;                         // I/O thread only
  // Every HEARTBEAT is this frame: built once, so a heartbeat allocates no tensor.
  const FrameHeader heartbeat_header = *make_header(FrameKind::kHeartbeat, 0, 0, 0, DType::kU8, {0});
  const Tensor heartbeat_payload = bytes_tensor("");

  mutable std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Peer> peers;              // guarded by mu
  std::map<MailKey, std::deque<Arrived>> mailbox;  // guarded by mu
  std::map<MailKey, std::shared_ptr<Posted>> posted;  // guarded by mu: post_recv() until wait/cancel
  std::map<TrafficKey, TrafficStats> traffic;      // guarded by mu
  ErrorFeedback feedback;                          // send(): residuals of lossy streams
  std::deque<Status> refusals;                    // guarded by mu
  std::vector<std::string> joiners;               // guarded by mu: accepted joining nodes not yet taken
  size_t open_connections = 0;                    // guarded by mu

  // ------------------------------------------------------------ connection lifecycle (I/O thread)

  std::shared_ptr<Connection> adopt(tcp::socket socket, std::string address) {
    auto c = std::make_shared<Connection>(io, std::move(socket), std::move(address));
    tune_socket(c->socket);
    connections.insert(c);
    std::lock_guard<std::mutex> lock(mu);
    ++open_connections;
    return c;
  }

  // `why` names the connection (every handshake error does).
  void record_refusal(const Status& why) {
    Status refusal = why.with_context("node '" + options.node_id + "' refused a connection");
    RN_LOG_WARN(refusal.message());
    std::lock_guard<std::mutex> lock(mu);
    refusals.push_back(refusal);
    if (refusals.size() > kMaxRefusalsKept) refusals.pop_front();
    cv.notify_all();
  }

  // Closes `c` and tells whoever cares why: the peer table if registered, else the
  // handshake. The reason is recorded before the socket closes, so whoever sees the
  // close (the remote end, a test) finds the reason already there.
  // `orderly`: the peer said BYE; that is the normal end of a run, not worth a warning.
  void fail_connection(std::shared_ptr<Connection> c, const Status& why,
                       bool orderly = false) {  // by value: callers may pass a set element
    if (!c->open) return;
    c->open = false;
    {
      std::lock_guard<std::mutex> lock(c->direct_mu);
      c->direct_ok = false;  // before the socket closes: no send() writes to its descriptor after this
    }
    uint64_t dropped = 0;
    for (const auto& f : c->out) dropped += f.counted ? 1 : 0;
    c->out.clear();
    // Moving the callback out also breaks its reference cycle through `c`.
    std::function<void(const Status&)> on_handshake_failure = std::move(c->on_handshake_failure);
    c->on_handshake_failure = nullptr;
    if (!c->registered) {
      if (on_handshake_failure) on_handshake_failure(why);
    } else if (!shutting_down && orderly) {
      RN_VERBOSE("transport ", options.node_id, ": ", why.message());
    } else if (!shutting_down) {
      RN_LOG_WARN("transport ", options.node_id, ": ", why.message());
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      if (c->reading_posted) {
        // The socket closes below, so nothing more is read into the posting's buffer: release it.
        c->reading_posted->state = Posted::State::kDone;
        c->reading_posted->status = why.ok() ? error(Code::kNetwork, c->who(), " connection closed") : why;
        c->reading_posted.reset();
      }
      if (c->registered) {
        Peer& peer = peers[c->peer_id];
        std::erase(peer.conns, c);
        peer.queued -= dropped;
        peer.lost += dropped;
        if (dropped) peer.lost_reason = why;
        if (peer.conns.empty()) peer.failure = why;
      }
      cv.notify_all();
    }
    asio::error_code ignored;
    c->socket.shutdown(tcp::socket::shutdown_both, ignored);
    c->socket.close(ignored);
    c->timer.cancel();
    connections.erase(c);
    std::lock_guard<std::mutex> lock(mu);
    --open_connections;
    cv.notify_all();
  }

  // `joiner`: a joining node this node accepted; take_joiners() reports it.
  void register_peer(const std::shared_ptr<Connection>& c, bool joiner = false) {
    c->registered = true;
    c->on_handshake_failure = nullptr;
    c->timer.cancel();
    c->last_arrival = Clock::now();  // the first deadline is the floor
    c->max_gap_ms = 0;
    {
      std::lock_guard<std::mutex> lock(c->direct_mu);
      c->fd = c->socket.native_handle();
      c->direct_ok = true;
    }
    std::lock_guard<std::mutex> lock(mu);
    Peer& peer = peers[c->peer_id];
    if (peer.conns.empty()) peer.failure = Status();  // a peer that came back
    peer.forgotten = false;
    peer.address = c->address;
    peer.conns.push_back(c);
    if (joiner) joiners.push_back(c->peer_id);
    cv.notify_all();
  }

  // ------------------------------------------------------------ liveness (I/O thread)

  void start_heartbeats() {
    if (options.heartbeat_interval.count() <= 0 || shutting_down) return;
    heartbeat_timer.expires_after(options.heartbeat_interval);
    heartbeat_timer.async_wait([this](const asio::error_code& ec) {
      if (ec || shutting_down) return;
      heartbeat_tick();
      start_heartbeats();
    });
  }

  void heartbeat_tick() {
    const Clock::time_point now = Clock::now();
    for (auto it = connections.begin(); it != connections.end();) {
      std::shared_ptr<Connection> c = *it++;  // advanced first: failing `c` erases it
      if (!c->registered || !c->open) continue;
      // Deadline of silence: the floor, or the slowest gap seen on this connection times the factor.
      const double floor_ms = static_cast<double>(options.heartbeat_min_timeout.count());
      const double gap_deadline_ms = options.heartbeat_gap_factor * c->max_gap_ms;
      const double deadline_ms = std::max(floor_ms, gap_deadline_ms);
      const double silent_ms = std::chrono::duration<double, std::milli>(now - c->last_arrival).count();
      if (silent_ms > deadline_ms) {
        // Bytes waiting unread mean this process, not the peer, was stalled (suspended, swapped out).
        asio::error_code ec;
        if (c->socket.available(ec) > 0 && !ec) {
          c->last_arrival = now;
        } else {
          const std::string derived =
              gap_deadline_ms > floor_ms
                  ? str_cat(options.heartbeat_gap_factor, " x the slowest gap seen on this connection, ",
                            static_cast<int64_t>(c->max_gap_ms), " ms")
                  : std::string("the floor heartbeat_min_timeout");
          const auto silent = static_cast<int64_t>(std::ceil(silent_ms));
          fail_connection(c, error(Code::kNetwork, c->who(), " sent nothing for ", silent,
                                   " ms, past its heartbeat deadline of ", static_cast<int64_t>(deadline_ms), " ms (",
                                   derived, "): the process is frozen or overloaded, or its link is down"));
          continue;
        }
      }
      if (c->close_after_write) continue;  // BYE or a refusal is the last frame
      // A heartbeat only where nothing was written since the last tick: data frames prove liveness too.
      bool wrote = c->writing || c->wrote;
      c->wrote = false;
      {
        std::lock_guard<std::mutex> lock(c->direct_mu);
        wrote = wrote || c->direct_wrote || c->io_frames > 0;
        c->direct_wrote = false;
      }
      if (!wrote) {
        io_enqueue(c, Connection::OutFrame{heartbeat_header, heartbeat_payload, false});
        c->wrote = false;  // the heartbeat's own write does not count as traffic at the next tick
      }
    }
  }

  // ------------------------------------------------------------ writing (I/O thread)

  // `frame` was already counted in c->io_frames (send() and io_enqueue() count).
  void enqueue(const std::shared_ptr<Connection>& c, Connection::OutFrame frame) {
    if (!c->open) {
      {
        std::lock_guard<std::mutex> lock(c->direct_mu);
        c->io_frames -= 1;
      }
      if (frame.counted) {
        std::lock_guard<std::mutex> lock(mu);
        Peer& peer = peers[c->peer_id];
        peer.queued -= 1;
        peer.lost += 1;
        peer.lost_reason = peer.failure.ok() ? error(Code::kNetwork, c->who(), " connection closed") : peer.failure;
        cv.notify_all();
      }
      return;
    }
    // The payload checksum is computed here, on the I/O thread, not in the caller's compute path,
    // unless the caller asked to compute it in send().
    if (!frame.crc_done) frame.header.payload_crc = crc32c(frame.payload.raw(), frame.payload.bytes());
    frame.bytes = encode_header(frame.header);
    c->out.push_back(std::move(frame));
    if (!c->writing) write_next(c);
  }

  // A send() frame is on the socket: stats() and flush() count it. Requires mu.
  void count_written(const std::string& peer_id, const Connection::OutFrame& frame) {
    TrafficStats& t = traffic[TrafficKey{peer_id, frame.header.kind}];
    t.frames += 1;
    t.bytes += kFrameHeaderBytes + frame.header.payload_bytes;
    t.raw_bytes += kFrameHeaderBytes + frame.raw_payload_bytes;
    // Only flush() waits on `queued`, and only for it to reach 0: waking every waiter
    // (recv() callers) after each written frame would cost a context switch per frame.
    if (--peers[peer_id].queued == 0) cv.notify_all();
  }

  // Queues a frame of the I/O thread's own (HELLO, BYE).
  void io_enqueue(const std::shared_ptr<Connection>& c, Connection::OutFrame frame) {
    {
      std::lock_guard<std::mutex> lock(c->direct_mu);
      c->io_frames += 1;
    }
    enqueue(c, std::move(frame));
  }

  void write_next(const std::shared_ptr<Connection>& c) {
    if (!c->open) return;
    if (c->out.empty()) {
      c->writing = false;
      if (c->close_after_write) {
        // Half-close: the peer reads everything we sent, then its EOF ends our read loop.
        asio::error_code ignored;
        c->socket.shutdown(tcp::socket::shutdown_send, ignored);
      }
      return;
    }
    c->writing = true;
    c->wrote = true;
    // Frames queued meanwhile go out together in one gathered write (one system call
    // for a burst of chunks), up to kMaxFramesPerWrite frames or kMaxBytesPerWrite bytes.
    // With on_frame_written, one frame per write, so that each frame's reported write
    // interval is its own (traces draw them on one lane).
    const size_t max_frames = options.on_frame_written ? 1 : kMaxFramesPerWrite;
    size_t frames = 0;
    size_t bytes = 0;
    std::vector<asio::const_buffer> buffers;
    buffers.reserve(2 * std::min(c->out.size(), max_frames));
    const auto now =
        options.on_frame_written ? std::chrono::system_clock::now() : std::chrono::system_clock::time_point{};
    for (Connection::OutFrame& f : c->out) {
      if (frames == max_frames || (frames > 0 && bytes + f.payload.bytes() > kMaxBytesPerWrite)) break;
      if (options.on_frame_written) f.write_begin = now;
      // The rest of a frame that send() wrote in part (only ever the first one).
      const size_t skip_header = std::min<size_t>(f.skip, kFrameHeaderBytes);
      const size_t skip_payload = static_cast<size_t>(f.skip) - skip_header;
      if (skip_header < kFrameHeaderBytes) buffers.push_back(asio::buffer(f.bytes) + skip_header);
      buffers.push_back(asio::buffer(f.payload.raw(), f.payload.bytes()) + skip_payload);
      bytes += kFrameHeaderBytes + f.payload.bytes() - static_cast<size_t>(f.skip);
      ++frames;
    }
    asio::async_write(
        c->socket, buffers, transfer_exactly_in_one_go(bytes), [this, c, frames](const asio::error_code& ec, size_t) {
          if (!c->open) return;  // failed meanwhile; the queue was already accounted
          if (ec) {
            fail_connection(c, socket_failure(c->who(), ec));
            return;
          }
          const auto end =
              options.on_frame_written ? std::chrono::system_clock::now() : std::chrono::system_clock::time_point{};
          // Callbacks first: once flush() sees the count reach 0, every callback has run.
          if (options.on_frame_written) {
            for (size_t i = 0; i < frames; ++i) {
              const Connection::OutFrame& done = c->out[i];
              if (done.counted) options.on_frame_written(FrameWritten{c->peer_id, done.header, done.write_begin, end});
            }
          }
          {
            std::lock_guard<std::mutex> lock(mu);
            for (size_t i = 0; i < frames; ++i) {
              const Connection::OutFrame& done = c->out[i];
              if (done.counted) count_written(c->peer_id, done);
            }
          }
          c->out.erase(c->out.begin(), c->out.begin() + static_cast<std::ptrdiff_t>(frames));
          {
            std::lock_guard<std::mutex> lock(c->direct_mu);
            c->io_frames -= frames;
          }
          write_next(c);
        });
  }

  void send_hello(const std::shared_ptr<Connection>& c, const Json& body) {
    std::string text = body.dump(0);
    Result<FrameHeader> h = make_header(FrameKind::kHello, 0, 0, 0, DType::kU8, {static_cast<int64_t>(text.size())});
    RN_ENFORCE(h.ok(), h.status().to_string());
    io_enqueue(c, Connection::OutFrame{*h, bytes_tensor(text), false});
  }

  // ------------------------------------------------------------ reading (I/O thread)

  using FrameHandler = std::function<void(Status, FrameHeader, Tensor)>;

  // Reads one frame: header, validation against `limits`, payload, payload checksum.
  // `to_posted` (after the handshake): a frame with a posted receive is read into its buffer
  // instead, and the read loop goes on without calling `done`.
  void read_frame(const std::shared_ptr<Connection>& c, const FrameLimits& limits, FrameHandler done,
                  bool to_posted = false) {
    asio::async_read(c->socket, asio::buffer(c->in_header), transfer_exactly_in_one_go(kFrameHeaderBytes, c.get()),
                     [this, c, limits, to_posted, done = std::move(done)](const asio::error_code& ec, size_t) mutable {
                       if (!c->open) return;
                       if (ec) return done(socket_failure(c->who(), ec), {}, {});
                       c->note_arrival();
                       Result<FrameHeader> h = decode_header(c->in_header, limits);
                       if (!h.ok()) return done(h.status().with_context("bad frame from " + c->who()), {}, {});
                       c->in_crc = 0;  // the payload's checksum starts here (read_checksumming() extends it)
                       c->in_crc_done = 0;
                       if (to_posted) {
                         if (std::shared_ptr<Posted> p = claim_posted(*c, *h)) {
                           return read_posted(c, std::move(*h), std::move(p));
                         }
                       }
                       // An encoded payload is read as bytes; recv() decodes it.
                       Tensor payload = h->codec == Codec::kRaw
                                            ? Tensor::empty(h->dtype, h->shape)
                                            : Tensor::empty(DType::kU8, {static_cast<int64_t>(h->payload_bytes)});
                       if (h->payload_bytes == 0) return check_payload(c, std::move(*h), std::move(payload), done);
                       auto* dst = static_cast<std::byte*>(payload.raw());
                       asio::async_read(c->socket, asio::buffer(dst, h->payload_bytes),
                                        read_checksumming(h->payload_bytes, c.get(), dst),
                                        [this, c, h = std::move(*h), payload = std::move(payload),
                                         done = std::move(done)](const asio::error_code& ec2, size_t) mutable {
                                          if (!c->open) return;
                                          if (ec2) return done(socket_failure(c->who(), ec2), {}, {});
                                          c->note_arrival();
                                          check_payload(c, std::move(h), std::move(payload), done);
                                        });
                     });
  }

  // kCorrupt naming the frame, unless `crc` (of the payload as read) is the one its header announced.
  static Status payload_crc_status(const Connection& c, const FrameHeader& h, uint32_t crc) {
    if (crc == h.payload_crc) return Status();
    return error(Code::kCorrupt, "bad frame from ", c.who(), ": field 'payload_crc' is ", h.payload_crc,
                 " but the payload of ", h.describe(), " checksums to ", crc, " (corrupted in transit)");
  }

  void check_payload(const std::shared_ptr<Connection>& c, FrameHeader h, Tensor payload, const FrameHandler& done) {
    const uint32_t crc = finish_checksum(*c, payload.bytes(), static_cast<const std::byte*>(payload.raw()));
    Status st = payload_crc_status(*c, h, crc);
    if (!st.ok()) return done(st, {}, {});
    done(Status(), std::move(h), std::move(payload));
  }

  // The posted receive that the frame of header `h` lands in, now marked as being read, or null:
  // none posted, or posted for a frame of another dtype, codec or size, which fails that posting
  // (kCorrupt) while the frame goes to the mailbox as usual.
  std::shared_ptr<Posted> claim_posted(Connection& c, const FrameHeader& h) {
    std::lock_guard<std::mutex> lock(mu);
    if (posted.empty()) return nullptr;
    auto it = posted.find(mail_key(c.peer_id, FrameMeta{h.kind, h.step, h.microbatch, h.tensor_id}));
    if (it == posted.end() || !it->second->from_io || it->second->state != Posted::State::kWaiting) return nullptr;
    Posted& p = *it->second;
    if (h.codec != Codec::kRaw || h.dtype != p.dtype || h.payload_bytes != p.dst.size()) {
      p.state = Posted::State::kDone;
      p.status = error(Code::kCorrupt, "bad frame from ", c.who(), ": ", h.describe(), " is a ", dtype_name(h.dtype),
                       " tensor of shape ", shape_str(h.shape), " (codec ", codec_name(h.codec), ", ", h.payload_bytes,
                       " payload bytes) where a raw ", dtype_name(p.dtype), " payload of ", p.dst.size(),
                       " bytes was expected");
      cv.notify_all();
      return nullptr;
    }
    p.state = Posted::State::kReading;
    return it->second;
  }

  // Reads the payload of `h` straight into the posted buffer, then completes the posting and
  // goes on with the read loop; a bad checksum completes it with kCorrupt and fails the connection.
  void read_posted(const std::shared_ptr<Connection>& c, FrameHeader h, std::shared_ptr<Posted> p) {
    c->reading_posted = p;
    std::byte* dst = p->dst.data();
    auto finish = [this, c, h = std::move(h), dst](const asio::error_code& ec, size_t) {
      if (!c->open) return;  // fail_connection() completed the posting
      if (ec) return fail_connection(c, socket_failure(c->who(), ec));
      c->note_arrival();
      Status st = payload_crc_status(*c, h, finish_checksum(*c, h.payload_bytes, dst));
      {
        std::lock_guard<std::mutex> lock(mu);
        c->reading_posted->state = Posted::State::kDone;
        c->reading_posted->status = st;
        c->reading_posted.reset();
        cv.notify_all();
      }
      if (!st.ok()) return fail_connection(c, st);
      read_loop(c);
    };
    if (h.payload_bytes == 0) return finish(asio::error_code(), 0);
    asio::async_read(c->socket, asio::buffer(dst, h.payload_bytes), read_checksumming(h.payload_bytes, c.get(), dst),
                     std::move(finish));
  }

  // Closes the connection reading into `p` (a posted receive whose caller gave up on it).
  void abort_posted_read(const std::shared_ptr<Posted>& p, const Status& why) {
    std::vector<std::shared_ptr<Connection>> all(connections.begin(), connections.end());
    for (const auto& c : all) {
      if (c->reading_posted == p) fail_connection(c, why);
    }
  }

  // After the handshake: deliver frames to the mailbox until the connection ends.
  void read_loop(const std::shared_ptr<Connection>& c) {
    read_frame(
        c, options.limits,
        [this, c](Status st, FrameHeader h, Tensor payload) {
          if (!st.ok()) return fail_connection(c, st);
          switch (h.kind) {
            case FrameKind::kBye:
              return fail_connection(c, error(Code::kNetwork, c->who(), " closed the connection (it sent BYE)"), true);
            case FrameKind::kHello:
              return fail_connection(c, error(Code::kCorrupt, "bad frame from ", c->who(),
                                              ": field 'kind' is HELLO after the handshake was done"));
            case FrameKind::kHeartbeat: break;
            default: {
              std::lock_guard<std::mutex> lock(mu);
              FrameMeta meta{h.kind, h.step, h.microbatch, h.tensor_id};
              mailbox[mail_key(c->peer_id, meta)].push_back(Arrived{h.codec, h.shape, std::move(payload)});
              cv.notify_all();
            }
          }
          read_loop(c);
        },
        /*to_posted=*/true);
  }

  // ------------------------------------------------------------ handshake

  void arm_handshake_timer(const std::shared_ptr<Connection>& c, Clock::time_point deadline, Status on_expiry) {
    c->timer.expires_at(deadline);
    c->timer.async_wait([this, c, on_expiry](const asio::error_code& ec) {
      if (ec || c->registered) return;
      fail_connection(c, on_expiry);
    });
  }

  Json hello_body(bool accepted, const std::string& refusal) const {
    Json body = Json::object();
    body.set("node", options.node_id);
    body.set("run", run_id);
    if (run_id.empty()) body.set("join", true);  // a joining node, not yet in a run
    body.set("protocol", static_cast<int>(kProtocolVersion));
    if (!accepted) body.set("error", refusal);
    body.set("accepted", accepted);
    return body;
  }

  // Listening side: read the peer's HELLO, check it, answer, then register or refuse.
  void accept_handshake(const std::shared_ptr<Connection>& c) {
    c->on_handshake_failure = [this](const Status& why) { record_refusal(why); };
    arm_handshake_timer(
        c, Clock::now() + options.handshake_timeout,
        error(Code::kTimeout, c->who(), " sent no HELLO within ", options.handshake_timeout.count(), " ms"));
    read_frame(c, FrameLimits{kMaxHelloBytes}, [this, c](Status st, FrameHeader h, Tensor payload) {
      if (!st.ok()) {
        if (st.code() == Code::kUnsupported)
          refuse(c, st);  // another protocol version: tell it why
        else
          fail_connection(c, st);
        return;
      }
      if (h.kind != FrameKind::kHello) {
        return fail_connection(c, error(Code::kCorrupt, "bad frame from ", c->who(), ": field 'kind' of the first ",
                                        "frame is ", frame_kind_name(h.kind), ", expected HELLO"));
      }
      Result<Json> body = parse_json(tensor_bytes(payload));
      Result<std::string> node = body.ok() ? body->get_string("node") : Result<std::string>(body.status());
      Result<std::string> run = body.ok() ? body->get_string("run") : Result<std::string>(body.status());
      Result<bool> join = body.ok() ? body->get_bool_or("join", false) : Result<bool>(body.status());
      if (!node.ok() || !run.ok() || !join.ok() || node->empty()) {
        Status why = !node.ok()   ? node.status()
                     : !run.ok()  ? run.status()
                     : !join.ok() ? join.status()
                                  : error(Code::kCorrupt, "empty node id");
        return fail_connection(c, error(Code::kCorrupt, "bad HELLO from ", c->who(), ": ", why.message()));
      }
      c->peer_id = *node;
      if (run_id.empty()) {
        return refuse(c, error(Code::kInvalidArgument, c->who(), " connected, but node '", options.node_id,
                               "' has not joined a run yet; it accepts connections once it has joined one"));
      }
      const bool joiner = *join && run->empty();
      if (joiner && !options.accept_joiners) {
        return refuse(c, error(Code::kInvalidArgument, c->who(), " asked to join run '", run_id, "', but node '",
                               options.node_id, "' does not accept joining nodes"));
      }
      if (!joiner && *run != run_id) {
        return refuse(c, error(Code::kInvalidArgument, "run id mismatch: ", c->who(), " announced run '", *run,
                               "' but node '", options.node_id, "' belongs to run '", run_id,
                               "'; start every node of a run from the same compiled bundles"));
      }
      send_hello(c, hello_body(true, ""));
      register_peer(c, joiner);
      if (joiner) RN_LOG_INFO("transport ", options.node_id, ": ", c->who(), " joined run '", run_id, "'");
      read_loop(c);
    });
  }

  // Records the refusal, answers with a refusing HELLO, and half-closes; the
  // handshake timer closes the socket if the peer does not close it first.
  void refuse(const std::shared_ptr<Connection>& c, const Status& why) {
    c->on_handshake_failure = nullptr;
    record_refusal(why);
    send_hello(c, hello_body(false, why.message()));
    c->close_after_write = true;
    if (!c->writing) write_next(c);
    drain(c);
  }

  // Reads and discards until the peer closes, so that our last frame is not lost
  // to a reset caused by unread data.
  void drain(const std::shared_ptr<Connection>& c) {
    c->socket.async_read_some(asio::buffer(c->in_header), [this, c](const asio::error_code& ec, size_t) {
      if (!c->open) return;
      if (ec) return fail_connection(c, Status());
      drain(c);
    });
  }

  void start_accept() {
    acceptor->async_accept([this](const asio::error_code& ec, tcp::socket socket) {
      if (shutting_down || !acceptor->is_open()) return;
      if (ec) {
        RN_LOG_WARN("transport ", options.node_id, ": accept failed: ", ec.message());
      } else {
        asio::error_code ep_ec;
        tcp::endpoint remote = socket.remote_endpoint(ep_ec);
        auto c = adopt(std::move(socket), ep_ec ? std::string("unknown address") : endpoint_str(remote));
        accept_handshake(c);
      }
      start_accept();
    });
  }

  // Connecting side: one attempt; `done(status, retryable)` is called exactly once.
  void connect_once(const std::string& peer_id, const tcp::endpoint& ep, Deadline deadline,
                    std::function<void(Status, bool)> done) {
    if (shutting_down) return done(error(Code::kNetwork, "transport is shutting down"), false);
    auto c = std::make_shared<Connection>(io, tcp::socket(io), endpoint_str(ep));
    auto finished = std::make_shared<bool>(false);
    auto finish = [finished, done](Status st, bool retryable) {
      if (*finished) return;
      *finished = true;
      done(std::move(st), retryable);
    };
    c->peer_id = peer_id;
    connections.insert(c);
    {
      std::lock_guard<std::mutex> lock(mu);
      ++open_connections;
    }
    // Failures before registration: refused/reset are worth retrying (the peer may be starting).
    c->on_handshake_failure = [finish](const Status& why) { finish(why, why.code() == Code::kNetwork); };
    arm_handshake_timer(c, deadline, error(Code::kTimeout, "no answer to HELLO before the deadline"));
    c->socket.async_connect(ep, [this, c, peer_id, finish](const asio::error_code& ec) {
      if (!c->open) return;
      if (ec) return fail_connection(c, error(Code::kNetwork, ec.message()));
      tune_socket(c->socket);
      send_hello(c, hello_body(true, ""));
      read_frame(c, FrameLimits{kMaxHelloBytes}, [this, c, peer_id, finish](Status st, FrameHeader h, Tensor payload) {
        if (!st.ok()) {
          // A version mismatch or bad reply will not improve by retrying.
          if (st.code() != Code::kNetwork) finish(st, false);
          return fail_connection(c, st);
        }
        Result<Json> body = parse_json(tensor_bytes(payload));
        Result<bool> accepted = body.ok() ? body->get_bool("accepted") : Result<bool>(body.status());
        Result<std::string> node = body.ok() ? body->get_string("node") : Result<std::string>(body.status());
        if (h.kind != FrameKind::kHello || !accepted.ok() || !node.ok()) {
          finish(error(Code::kCorrupt, "bad HELLO answer from ", c->who()), false);
          return fail_connection(c, Status());
        }
        if (!*accepted) {
          finish(error(Code::kInvalidArgument, c->who(),
                       " refused the handshake: ", body->get_string_or("error", "no reason given").value()),
                 false);
          return fail_connection(c, Status());
        }
        if (*node != peer_id) {
          finish(error(Code::kInvalidArgument, "expected peer '", peer_id, "' at ", c->address, " but node '", *node,
                       "' answered; check the peer addresses in the bundle"),
                 false);
          return fail_connection(c, Status());
        }
        if (Status run = adopt_or_check_run(*body, *c); !run.ok()) {
          finish(run, false);
          return fail_connection(c, Status());
        }
        register_peer(c);
        read_loop(c);
        finish(Status(), false);
      });
    });
  }

  // Connecting side, on an accepting answer: a joining node (no run id yet) adopts the run id
  // the answer names; any other node checks it (an answer without one is taken on trust: the
  // listener compared the run ids already).
  Status adopt_or_check_run(const Json& answer, const Connection& c) {
    Result<std::string> run = answer.get_string("run");
    if (run_id.empty()) {
      if (!run.ok() || run->empty()) {
        return error(Code::kCorrupt, c.who(), " accepted this joining node but its answer names no run");
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        run_id = *run;
      }
      RN_LOG_INFO("transport ", options.node_id, ": joined run '", run_id, "' through ", c.who());
      return ok_status();
    }
    if (run.ok() && *run != run_id) {
      return error(Code::kInvalidArgument, c.who(), " belongs to run '", *run, "' but node '", options.node_id,
                   "' belongs to run '", run_id, "' (it joined that run through another peer meanwhile)");
    }
    return ok_status();
  }

  // ------------------------------------------------------------ shutdown

  void begin_close() {
    shutting_down = true;
    heartbeat_timer.cancel();
    asio::error_code ignored;
    if (acceptor) acceptor->close(ignored);
    std::vector<std::shared_ptr<Connection>> all(connections.begin(), connections.end());
    for (const auto& c : all) {
      if (!c->registered) {
        fail_connection(c, error(Code::kNetwork, "transport is shutting down"));
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(c->direct_mu);
        c->direct_ok = false;  // BYE is the last frame
      }
      io_enqueue(c,
                 Connection::OutFrame{*make_header(FrameKind::kBye, 0, 0, 0, DType::kU8, {0}), bytes_tensor(""), false});
      c->close_after_write = true;
      if (!c->writing) write_next(c);
    }
  }

  void force_close() {
    heartbeat_timer.cancel();
    std::vector<std::shared_ptr<Connection>> all(connections.begin(), connections.end());
    for (const auto& c : all) fail_connection(c, error(Code::kNetwork, "transport shut down"));
    acceptor.reset();
  }

  std::string describe_peer(const std::string& peer_id) const {  // requires mu
    auto it = peers.find(peer_id);
    if (it == peers.end()) return "peer '" + peer_id + "' (never connected)";
    return "peer '" + peer_id + "' (" + it->second.address + ")";
  }

  // The failure of a watched peer, if one has failed, for a wait on `waited` (requires mu).
  Status watched_failure(std::span<const std::string> watch, const std::string& waited, const FrameMeta& meta) const {
    for (const std::string& id : watch) {
      auto it = peers.find(id);
      if (it == peers.end() || it->second.failure.ok()) continue;
      return error(Code::kNetwork, "waiting for ", meta.describe(), " from ", describe_peer(waited), ": ",
                   describe_peer(id), ", another member, failed: ", it->second.failure.message());
    }
    return ok_status();
  }
};

// ================================================================ Transport

Transport::Transport(TransportOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  asio::post(impl_->io, [impl = impl_.get()] { impl->start_heartbeats(); });
  impl_->thread = std::thread([impl = impl_.get()] { impl->io.run(); });
}

Transport::~Transport() {
  Impl& d = *impl_;
  asio::post(d.io, [&d] { d.begin_close(); });
  {
    // Wait (bounded) for queued frames and BYE to go out and peers to close their side.
    std::unique_lock<std::mutex> lock(d.mu);
    d.cv.wait_for(lock, d.options.close_timeout, [&d] { return d.open_connections == 0; });
  }
  asio::post(d.io, [&d] { d.force_close(); });
  d.work.reset();
  d.thread.join();
}

Status Transport::listen(const std::string& host, uint16_t port) {
  Impl& d = *impl_;
  asio::error_code ec;
  asio::ip::address addr = asio::ip::make_address(host, ec);
  if (ec) return error(Code::kInvalidArgument, "cannot listen on '", host, "': not an IP address (", ec.message(), ")");
  tcp::endpoint ep(addr, port);
  auto acceptor = std::make_unique<tcp::acceptor>(d.io);
  std::string where = endpoint_str(ep);
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return error(Code::kNetwork, "node '", d.options.node_id, "' cannot listen on ", where, ": ", ec.message());
  d.bound_port = acceptor->local_endpoint(ec).port();
  std::promise<void> started;
  asio::post(d.io, [&d, &started, a = std::move(acceptor)]() mutable {
    d.acceptor = std::move(a);
    d.start_accept();
    started.set_value();
  });
  started.get_future().wait();
  return ok_status();
}

uint16_t Transport::port() const {
  return impl_->bound_port;
}

const std::string& Transport::node_id() const {
  return impl_->options.node_id;
}

std::string Transport::run_id() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->run_id;
}

std::vector<std::string> Transport::take_joiners() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return std::exchange(impl_->joiners, {});
}

Status Transport::connect(const std::string& peer_id, const std::string& host, uint16_t port, Deadline deadline) {
  Impl& d = *impl_;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    auto it = d.peers.find(peer_id);
    if (it != d.peers.end() && !it->second.conns.empty()) return ok_status();
  }
  asio::error_code ec;
  tcp::endpoint ep;
  asio::ip::address addr = asio::ip::make_address(host, ec);
  if (!ec) {
    ep = tcp::endpoint(addr, port);
  } else {
    tcp::resolver resolver(d.io);
    auto results = resolver.resolve(host, std::to_string(port), ec);
    if (ec || results.empty()) {
      return error(Code::kNetwork, "cannot resolve host '", host, "' of peer '", peer_id, "': ", ec.message());
    }
    ep = *results.begin();
  }
  const Clock::time_point start = Clock::now();
  auto pause = d.options.connect_retry_interval;
  int attempts = 0;
  Status last;
  while (true) {
    ++attempts;
    auto result = std::make_shared<std::promise<std::pair<Status, bool>>>();
    std::future<std::pair<Status, bool>> future = result->get_future();
    asio::post(d.io, [&d, peer_id, ep, deadline, result] {
      d.connect_once(peer_id, ep, deadline, [result](Status st, bool retryable) {
        result->set_value({std::move(st), retryable});
      });
    });
    auto [st, retryable] = future.get();  // the attempt's own timer bounds this by `deadline`
    if (st.ok()) return st;
    last = st;
    if (!retryable) return st.with_context("connecting to peer '" + peer_id + "' at " + endpoint_str(ep));
    if (Clock::now() + pause >= deadline) break;
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::milliseconds>(pause * 2, std::chrono::milliseconds(1000));
  }
  return error(Code::kTimeout, "could not connect to peer '", peer_id, "' at ", endpoint_str(ep), " within ",
               ms_between(start, deadline), " ms (", attempts, " attempts; last error: ", last.message(),
               "); is it running and listening there?");
}

Status Transport::wait_for_peer(const std::string& peer_id, Deadline deadline) {
  Impl& d = *impl_;
  const Clock::time_point start = Clock::now();
  std::unique_lock<std::mutex> lock(d.mu);
  auto connected = [&] {
    auto it = d.peers.find(peer_id);
    return it != d.peers.end() && !it->second.conns.empty();
  };
  if (d.cv.wait_until(lock, deadline, connected)) return ok_status();
  auto it = d.peers.find(peer_id);
  if (it != d.peers.end() && !it->second.failure.ok()) return it->second.failure;
  return error(Code::kTimeout, "node '", d.options.node_id, "' waited ", ms_between(start, deadline), " ms for peer '",
               peer_id, "' to connect; it did not");
}

Status Transport::send(const std::string& peer_id, const FrameMeta& meta, const Tensor& tensor,
                       const WireCodec& codec) {
  Impl& d = *impl_;
  RN_ASSIGN_OR_RETURN(FrameHeader header, make_header(meta.kind, meta.step, meta.microbatch, meta.tensor_id,
                                                      tensor.dtype(), tensor.shape()));
  const uint64_t raw_payload_bytes = header.payload_bytes;
  Tensor payload = tensor;
  if (codec.spec.codec != Codec::kRaw) {
    // Encode here, on the caller's thread; the frame then carries the encoded bytes.
    const Codec c = codec.spec.codec;
    if (tensor.dtype() != DType::kF32) {
      return error(Code::kInvalidArgument, "cannot send ", meta.describe(), " to peer '", peer_id, "' with codec ",
                   codec_name(c), ": it encodes float32 tensors, this one is ", dtype_name(tensor.dtype()));
    }
    const StreamKey key{peer_id, static_cast<uint16_t>(meta.kind), meta.tensor_id};
    Result<std::vector<uint8_t>> bytes =
        codec.error_feedback ? d.feedback.encode(key, c, tensor.data<float>(), tensor.numel(), codec.spec.params)
                             : encode(c, tensor.data<float>(), tensor.numel(), codec.spec.params);
    if (!bytes.ok())
      return bytes.status().with_context("cannot send " + meta.describe() + " to peer '" + peer_id + "'");
    payload = Tensor::empty(DType::kU8, {static_cast<int64_t>(bytes->size())});
    if (!bytes->empty()) std::memcpy(payload.raw(), bytes->data(), bytes->size());
    header.codec = c;
    header.payload_bytes = bytes->size();
  }
  if (header.payload_bytes > d.options.limits.max_payload_bytes) {
    return error(Code::kInvalidArgument, "cannot send ", meta.describe(), " to peer '", peer_id,
                 "': ", header.payload_bytes, " bytes exceed the frame limit of ", d.options.limits.max_payload_bytes);
  }
  if (header.payload_bytes > 0 && payload.raw() == nullptr) {
    return error(Code::kInvalidArgument, "cannot send ", meta.describe(), " to peer '", peer_id, "': no data");
  }
  std::shared_ptr<Connection> c;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    auto it = d.peers.find(peer_id);
    if (it == d.peers.end()) {
      return error(Code::kNotFound, "cannot send ", meta.describe(), ": no connection to peer '", peer_id,
                   "'; connect() to it or wait_for_peer() first");
    }
    Peer& peer = it->second;
    if (peer.conns.empty()) return peer.failure.with_context("cannot send " + meta.describe());
    c = peer.conns.front();
    peer.queued += 1;
  }
  Connection::OutFrame frame{header, std::move(payload), true};
  frame.raw_payload_bytes = raw_payload_bytes;
  // Direct writes report no on_frame_written (it runs on the I/O thread); those callers go through it.
  const bool direct = codec.write_in_send && !d.options.on_frame_written;
  if (direct) {
    frame.header.payload_crc = crc32c(frame.payload.raw(), frame.payload.bytes());
    frame.crc_done = true;
    frame.bytes = encode_header(frame.header);
  }
  std::lock_guard<std::mutex> direct_lock(c->direct_mu);
  if (direct && c->direct_ok && c->io_frames == 0) {
    // Nothing is queued ahead: write on this thread, without waiting for the I/O thread.
    const uint64_t total = kFrameHeaderBytes + frame.header.payload_bytes;
    iovec iov[2] = {{frame.bytes.data(), kFrameHeaderBytes}, {frame.payload.raw(), frame.header.payload_bytes}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = frame.header.payload_bytes > 0 ? 2 : 1;
    const ssize_t n = ::sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    // A full socket or an error: the I/O thread writes the rest, or finds and reports the error.
    frame.skip = n > 0 ? static_cast<uint64_t>(n) : 0;
    c->direct_wrote = c->direct_wrote || n > 0;
    if (frame.skip == total) {
      std::lock_guard<std::mutex> lock(d.mu);
      d.count_written(c->peer_id, frame);
      return ok_status();
    }
  }
  c->io_frames += 1;
  // Posted under direct_mu, so frames reach the I/O thread in the order they were decided.
  asio::post(d.io, [&d, c, frame = std::move(frame)]() mutable { d.enqueue(c, std::move(frame)); });
  return ok_status();
}

Status Transport::flush(Deadline deadline) {
  Impl& d = *impl_;
  const Clock::time_point start = Clock::now();
  std::unique_lock<std::mutex> lock(d.mu);
  auto drained = [&] {
    for (const auto& [id, peer] : d.peers)
      if (peer.queued) return false;
    return true;
  };
  if (!d.cv.wait_until(lock, deadline, drained)) {
    for (const auto& [id, peer] : d.peers) {
      if (peer.queued) {
        return error(Code::kTimeout, "flush waited ", ms_between(start, deadline), " ms; ", peer.queued, " frames to ",
                     d.describe_peer(id), " are still unwritten (slow link or stalled receiver)");
      }
    }
  }
  for (auto& [id, peer] : d.peers) {
    if (peer.lost && !peer.forgotten) {
      Status st = error(Code::kNetwork, peer.lost, " frames queued for ", d.describe_peer(id),
                        " were not delivered: ", peer.lost_reason.message());
      peer.lost = 0;
      return st;
    }
  }
  return ok_status();
}

Status Transport::wait_sent(const std::string& peer_id, Deadline deadline) {
  Impl& d = *impl_;
  const Clock::time_point start = Clock::now();
  std::unique_lock<std::mutex> lock(d.mu);
  auto drained = [&] {
    auto it = d.peers.find(peer_id);
    return it == d.peers.end() || it->second.queued == 0;
  };
  if (d.cv.wait_until(lock, deadline, drained)) return ok_status();
  Status why = error(Code::kTimeout, "node '", d.options.node_id, "' waited ", ms_between(start, deadline), " ms for ",
                     d.peers[peer_id].queued, " frames to ", d.describe_peer(peer_id),
                     " to be written; they were not (slow link or stalled receiver), so its connection is closed");
  asio::post(d.io, [&d, peer_id, why] {
    std::vector<std::shared_ptr<Connection>> conns;
    {
      std::lock_guard<std::mutex> inner(d.mu);
      conns = d.peers[peer_id].conns;
    }
    for (const auto& c : conns) d.fail_connection(c, why);
  });
  // The I/O thread drops what is queued on the connections it closes, and what reaches it later.
  d.cv.wait(lock, drained);
  return why;
}

uint64_t Transport::forget_lost(const std::string& peer_id) {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.peers.find(peer_id);
  if (it == d.peers.end()) return 0;
  const uint64_t lost = it->second.lost;
  it->second.lost = 0;
  it->second.forgotten = true;
  return lost;
}

Result<Tensor> Transport::recv(const std::string& peer_id, const FrameMeta& meta, Deadline deadline,
                               std::span<const std::string> watch) {
  Impl& d = *impl_;
  const Clock::time_point start = Clock::now();
  const MailKey key = mail_key(peer_id, meta);
  std::unique_lock<std::mutex> lock(d.mu);
  while (true) {
    auto box = d.mailbox.find(key);
    if (box != d.mailbox.end()) {
      Arrived a = std::move(box->second.front());
      box->second.pop_front();
      if (box->second.empty()) d.mailbox.erase(box);
      if (a.codec == Codec::kRaw) return std::move(a.payload);
      const Codec codec = a.codec;
      lock.unlock();  // decode outside the lock
      Result<Tensor> t = decode_arrived(std::move(a));
      if (t.ok()) return t;
      lock.lock();
      return t.status().with_context("bad frame from " + d.describe_peer(peer_id) + ": " + meta.describe() +
                                     " (codec " + codec_name(codec) + ")");
    }
    auto peer = d.peers.find(peer_id);
    if (peer != d.peers.end() && !peer->second.failure.ok()) {
      return peer->second.failure.with_context("waiting for " + meta.describe());
    }
    if (Status gone = d.watched_failure(watch, peer_id, meta); !gone.ok()) return gone;
    if (d.cv.wait_until(lock, deadline) == std::cv_status::timeout && d.mailbox.count(key) == 0) {
      peer = d.peers.find(peer_id);
      if (peer != d.peers.end() && !peer->second.failure.ok()) {
        return peer->second.failure.with_context("waiting for " + meta.describe());
      }
      bool connected = peer != d.peers.end() && !peer->second.conns.empty();
      return error(Code::kTimeout, "node '", d.options.node_id, "' timed out after ", ms_between(start, deadline),
                   " ms waiting for ", meta.describe(), " from ", d.describe_peer(peer_id),
                   connected ? "; the peer is connected but has not sent it" : "");
    }
  }
}

Status Transport::post_recv(const std::string& peer_id, const FrameMeta& meta, DType dtype, std::span<std::byte> dst) {
  Impl& d = *impl_;
  if (dst.size() > d.options.limits.max_payload_bytes) {
    return error(Code::kInvalidArgument, "cannot post a receive of ", meta.describe(), " from peer '", peer_id,
                 "': ", dst.size(), " bytes exceed the frame limit of ", d.options.limits.max_payload_bytes);
  }
  const MailKey key = mail_key(peer_id, meta);
  std::lock_guard<std::mutex> lock(d.mu);
  auto p = std::make_shared<Posted>();
  p->dtype = dtype;
  p->dst = dst;
  p->from_io = d.mailbox.count(key) == 0;
  if (!d.posted.emplace(key, std::move(p)).second) {
    return error(Code::kInvalidArgument, "a receive of ", meta.describe(), " from peer '", peer_id,
                 "' is already posted; wait_recv() or cancel_recv() it before posting it again");
  }
  return ok_status();
}

Status Transport::wait_recv(const std::string& peer_id, const FrameMeta& meta, Deadline deadline,
                            std::span<const std::string> watch) {
  Impl& d = *impl_;
  const Clock::time_point start = Clock::now();
  const MailKey key = mail_key(peer_id, meta);
  std::unique_lock<std::mutex> lock(d.mu);
  auto it = d.posted.find(key);
  if (it == d.posted.end()) {
    return error(Code::kInvalidArgument, "wait_recv: no receive of ", meta.describe(), " from peer '", peer_id,
                 "' is posted; call post_recv() first");
  }
  const std::shared_ptr<Posted> p = it->second;
  auto in_context = [&](const Status& st) { return st.with_context("receiving " + meta.describe()); };
  bool timed_out = false;
  while (true) {
    if (p->state == Posted::State::kDone) {
      d.posted.erase(key);
      return p->status.ok() ? p->status : in_context(p->status);
    }
    if (p->state == Posted::State::kWaiting) {
      auto box = d.mailbox.find(key);
      if (box != d.mailbox.end()) {
        // The frame came before the posting (or without one): copy it, decoded, into place.
        Arrived a = std::move(box->second.front());
        box->second.pop_front();
        if (box->second.empty()) d.mailbox.erase(box);
        d.posted.erase(key);
        const std::string who = d.describe_peer(peer_id);
        lock.unlock();
        const Codec codec = a.codec;
        Result<Tensor> t = decode_arrived(std::move(a));
        if (!t.ok()) {
          return t.status().with_context("bad frame from " + who + ": " + meta.describe() + " (codec " +
                                         codec_name(codec) + ")");
        }
        if (t->dtype() != p->dtype || t->bytes() != p->dst.size()) {
          return error(Code::kCorrupt, "bad frame from ", who, ": ", meta.describe(), " is a ", dtype_name(t->dtype()),
                       " tensor of shape ", shape_str(t->shape()), " where ", dtype_name(p->dtype), " of ",
                       p->dst.size(), " bytes was expected");
        }
        if (!p->dst.empty()) std::memcpy(p->dst.data(), t->raw(), p->dst.size());
        return ok_status();
      }
      auto peer = d.peers.find(peer_id);
      if (peer != d.peers.end() && !peer->second.failure.ok()) {
        d.posted.erase(key);
        return in_context(peer->second.failure);
      }
      if (Status gone = d.watched_failure(watch, peer_id, meta); !gone.ok()) {
        d.posted.erase(key);  // not being read: nothing lands in dst after this
        return gone;
      }
      if (timed_out) {
        d.posted.erase(key);
        break;
      }
    }
    if (timed_out) {
      // Its payload is being read into the caller's buffer: only closing the connection stops that.
      Status why = error(Code::kTimeout, "node '", d.options.node_id, "' gave up on ", meta.describe(), " from ",
                         d.describe_peer(peer_id), " after ", ms_between(start, deadline),
                         " ms while its payload was arriving; the connection is closed");
      asio::post(d.io, [&d, p, why] { d.abort_posted_read(p, why); });
      d.cv.wait(lock, [&] { return p->state == Posted::State::kDone; });
      continue;
    }
    if (d.cv.wait_until(lock, deadline) == std::cv_status::timeout) timed_out = true;
  }
  auto peer = d.peers.find(peer_id);
  const bool connected = peer != d.peers.end() && !peer->second.conns.empty();
  return error(Code::kTimeout, "node '", d.options.node_id, "' timed out after ", ms_between(start, deadline),
               " ms waiting for ", meta.describe(), " from ", d.describe_peer(peer_id),
               connected ? "; the peer is connected but has not sent it" : "");
}

void Transport::cancel_recv(const std::string& peer_id, const FrameMeta& meta) {
  Impl& d = *impl_;
  const MailKey key = mail_key(peer_id, meta);
  std::unique_lock<std::mutex> lock(d.mu);
  auto it = d.posted.find(key);
  if (it == d.posted.end()) return;
  const std::shared_ptr<Posted> p = it->second;
  if (p->state == Posted::State::kReading) {
    Status why = error(Code::kNetwork, "node '", d.options.node_id, "' cancelled its receive of ", meta.describe(),
                       " while the payload was arriving from ", d.describe_peer(peer_id), "; the connection is closed");
    asio::post(d.io, [&d, p, why] { d.abort_posted_read(p, why); });
    d.cv.wait(lock, [&] { return p->state == Posted::State::kDone; });
  }
  d.posted.erase(key);
}

Status Transport::recv_into(const std::string& peer_id, const FrameMeta& meta, DType dtype, std::span<std::byte> dst,
                            Deadline deadline) {
  RN_RETURN_IF_ERROR(post_recv(peer_id, meta, dtype, dst));
  return wait_recv(peer_id, meta, deadline);
}

void Transport::unrecv(const std::string& peer_id, const FrameMeta& meta, Tensor tensor) {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  Shape shape = tensor.shape();
  d.mailbox[mail_key(peer_id, meta)].push_front(Arrived{Codec::kRaw, std::move(shape), std::move(tensor)});
  d.cv.notify_all();
}

std::vector<std::string> Transport::connected_peers() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<std::string> out;
  for (const auto& [id, peer] : impl_->peers)
    if (!peer.conns.empty()) out.push_back(id);
  return out;
}

std::map<TrafficKey, TrafficStats> Transport::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->traffic;
}

TrafficStats Transport::sent(FrameKind kind) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  TrafficStats total;
  for (const auto& [key, t] : impl_->traffic) {
    if (key.kind != kind) continue;
    total.frames += t.frames;
    total.bytes += t.bytes;
    total.raw_bytes += t.raw_bytes;
  }
  return total;
}

std::vector<Status> Transport::refused_connections() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return std::vector<Status>(impl_->refusals.begin(), impl_->refusals.end());
}

}  // namespace ravnest::rt
