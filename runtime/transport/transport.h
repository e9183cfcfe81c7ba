// Transport: tensors between named peers over TCP, with deadlines on every wait.
//
// Guarantees:
//  * One I/O thread per Transport runs all socket work, so send() only queues and
//    returns: communication overlaps the caller's computation. Frames to one peer
//    are written in the order send() was called. (With WireCodec::write_in_send,
//    send() first tries one non-blocking write itself when nothing is queued.)
//  * connect() and accepted connections start with a HELLO handshake (node id,
//    run id, protocol version). A peer with another run id or protocol version is
//    refused; the connecting side gets the reason from connect(), the listening
//    side records it in refused_connections().
//  * recv() returns exactly the frame asked for by (peer, kind, step, microbatch,
//    tensor id); frames that arrive earlier wait in a mailbox. A frame received
//    before its peer went away can still be received.
//  * post_recv()/wait_recv() (posted receives) land a raw payload straight in the caller's
//    buffer, read from the socket by the I/O thread with its checksum computed as it arrives;
//    once wait_recv() or cancel_recv() returns, the I/O thread writes no more into it.
//    wait_sent() returns once nothing queued for a peer can still be read from its memory.
//  * Every wait takes a deadline and fails with kTimeout naming the peer, the frame
//    and the time waited. When a peer closes its socket, crashes or sends a bad
//    frame, pending and later recv()/send() for that peer fail promptly with
//    kNetwork (closed, reset, crashed) or kCorrupt (bad frame), naming the peer id,
//    its address and the reason (the bad field for a bad frame).
//  * Heartbeats (TransportOptions::heartbeat_interval > 0): the I/O thread sends a
//    HEARTBEAT on every connection it wrote nothing to during the last interval, so a
//    live peer is never silent for long even while its caller computes. A connection
//    on which no byte arrived for longer than its deadline — max(heartbeat_min_timeout,
//    heartbeat_gap_factor x the slowest gap between arrivals seen on it, decayed) — is
//    failed with kNetwork naming the peer, the silence and the deadline, exactly like a
//    crashed peer: a frozen process (SIGSTOP, swapped out) whose kernel still ACKs is
//    detected. Every read of part of a frame counts as an arrival, so a large frame on
//    a slow link never trips the deadline.
//  * Joining (docs/wire-protocol.md, "Joining a run"): a Transport made with an empty
//    run_id announces "join" in its HELLO and adopts the run id of the first node that
//    accepts it (run_id()); until then it refuses incoming connections. A node accepts
//    joiners only with accept_joiners and reports them once each through take_joiners().
//  * Every frame length is validated against FrameLimits before allocation.
//  * send() may encode a float32 tensor with a codec (runtime/compress/codec.h, on the
//    caller's thread, with optional error feedback per (peer, kind, tensor id)); recv()
//    decodes it and returns the float32 tensor, so the receiver needs no configuration.
//    A payload that fails to decode fails that recv() with kCorrupt naming the peer,
//    the frame and the codec.
//  * stats() counts the bytes of every send() frame written to its socket, per peer
//    and kind, as written and as they would have been raw (codec 0).
//  * The destructor sends BYE to every peer, waits (bounded) for queued frames to
//    be written, closes every socket and joins the I/O thread.
// asio stays inside transport.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/compress/codec.h"
#include "runtime/tensor.h"
#include "runtime/transport/frame.h"

namespace ravnest::rt {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline Deadline deadline_after(std::chrono::milliseconds timeout) {
  return Clock::now() + timeout;
}

// A sent frame that the I/O thread finished writing to its socket.
struct FrameWritten {
  std::string peer_id;
  FrameHeader header;  // kind, step, microbatch, tensor id, payload_bytes
  std::chrono::system_clock::time_point begin, end;  // the socket write, after any frames queued before it
};

struct TransportOptions {
  std::string node_id;  // this node's id, sent in HELLO; peers know us by it
  std::string run_id;   // peers announcing another run id are refused; empty: join the run of the first accepting peer
  FrameLimits limits;
  // An accepted socket must complete its HELLO within this time.
  std::chrono::milliseconds handshake_timeout{5000};
  // connect() retries a refused connection after this pause, doubling up to 1 s.
  std::chrono::milliseconds connect_retry_interval{20};
  // The destructor waits at most this long for queued frames and BYE to be written.
  std::chrono::milliseconds close_timeout{2000};
  // Liveness: a HEARTBEAT every interval on each connection written nothing meanwhile; 0 disables
  // heartbeats and the deadline. Deadline of silence per connection: max(heartbeat_min_timeout,
  // heartbeat_gap_factor x slowest gap observed between arrivals on it). The floor must exceed the
  // link outages a run should survive.
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_min_timeout{15000};
  double heartbeat_gap_factor = 4.0;
  // Accept HELLOs of joining nodes (empty run id, "join": true); see take_joiners().
  bool accept_joiners = false;
  // Optional: called on the I/O thread for every frame of send() once written (traces use it). Must be quick.
  std::function<void(const FrameWritten&)> on_frame_written;
};

// What identifies a frame besides its tensor.
struct FrameMeta {
  FrameKind kind = FrameKind::kActivation;
  uint64_t step = 0;
  uint32_t microbatch = 0;
  uint32_t tensor_id = 0;
  std::string describe() const;  // "ACTIVATION step 3 microbatch 1 tensor 0"
};

// How send() encodes a tensor. Any codec but raw needs a float32 tensor.
struct WireCodec {
  CodecSpec spec;               // default: raw, the tensor's bytes as they are
  bool error_feedback = false;  // lossy codecs: carry what was lost into the next frame of the stream
  // send() checksums the payload and, when no earlier frame to the peer is still queued,
  // writes the frame to the socket itself, on the caller's thread (non-blocking; what does
  // not fit is left to the I/O thread). This saves a hand-off to the I/O thread per frame,
  // for callers that wait on the network anyway (the ring all-reduce). Frames to a peer keep
  // their send() order either way. Ignored when TransportOptions::on_frame_written is set.
  bool write_in_send = false;
};

// send() frames written to one peer, of one kind.
struct TrafficStats {
  uint64_t frames = 0;
  uint64_t bytes = 0;      // header + payload, as written
  uint64_t raw_bytes = 0;  // the same frames with codec 0: header + numel * dtype size
};
struct TrafficKey {
  std::string peer;
  FrameKind kind = FrameKind::kActivation;
  auto operator<=>(const TrafficKey&) const = default;
};

class Transport {
 public:
  explicit Transport(TransportOptions options);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Binds and starts accepting peers. Port 0 picks a free port; see port().
  Status listen(const std::string& host, uint16_t port);
  // The bound listening port (0 before listen()).
  uint16_t port() const;

  // Connects to `peer_id` at host:port and completes the handshake, retrying
  // refused connections until `deadline` (the peer may not have started yet).
  // Returns at once if a connection to peer_id already exists (e.g. it connected to us).
  Status connect(const std::string& peer_id, const std::string& host, uint16_t port, Deadline deadline);
  // Waits until `peer_id` is connected (by either side).
  Status wait_for_peer(const std::string& peer_id, Deadline deadline);

  // Queues `tensor` for `peer_id` and returns. The transport keeps a reference to
  // the tensor's storage; the caller must not modify it until flush() returns
  // (copy with clone() first if it must). Fails at once if the peer is unknown or gone.
  // With a codec other than raw, the tensor is encoded before send() returns (the
  // caller may then modify it) and sent with its codec in the frame header.
  Status send(const std::string& peer_id, const FrameMeta& meta, const Tensor& tensor, const WireCodec& codec = {});
  // Waits until every queued frame has been written to its socket. Reports frames
  // that were lost because their peer went away.
  Status flush(Deadline deadline);
  // Waits until no frame queued by send() for `peer_id` is left: each was written to its socket or
  // dropped with its connection. For a caller that lent memory to send() and must take it back
  // (RingAllreduce sends from the caller's buffer). At the deadline the peer's connections are closed,
  // dropping what is left, and it fails with kTimeout; either way no queued frame is read after it
  // returns. OK for a peer never connected.
  Status wait_sent(const std::string& peer_id, Deadline deadline);
  // Forgets the frames lost to `peer_id` so far, and those lost to it later until it connects
  // again (flush() will not report them), and returns how many there were so far: for a peer
  // that failed and was replaced or given up on (frames a send() queued just before the failure
  // may be counted lost after this call).
  uint64_t forget_lost(const std::string& peer_id);
  // Waits for the frame (peer_id, meta) and returns its tensor (decoded if it was encoded). With `watch`,
  // it also fails (kNetwork) as soon as one of those peers has failed: a collective's member waiting on a
  // live neighbour learns at once that another member is gone.
  Result<Tensor> recv(const std::string& peer_id, const FrameMeta& meta, Deadline deadline,
                      std::span<const std::string> watch = {});
  // Posted receives (docs/wire-protocol.md, "Posted receives"): post_recv() names where the payload of
  // frame (peer_id, meta) must land; when it arrives, the I/O thread reads it straight from the socket
  // into `dst`, checksumming each piece as it is read, with no tensor allocated and no copy. The frame
  // must be a raw (codec 0) `dtype` payload of exactly dst.size() bytes, of any shape. The caller keeps
  // `dst` alive and leaves it alone until wait_recv() or cancel_recv() for the frame returns. A frame
  // that was already in the mailbox is copied (decoded if encoded) into `dst` by wait_recv(). One
  // posting per frame key; kInvalidArgument for a second one.
  Status post_recv(const std::string& peer_id, const FrameMeta& meta, DType dtype, std::span<std::byte> dst);
  // Waits for a posted frame and ends its posting. OK: `dst` holds the payload, its CRC-32C checked.
  // Fails like recv(), or with kCorrupt for a bad checksum or a frame of another dtype, codec or size;
  // `dst` may then hold part of the bad frame, which must not be used. A deadline that passes while
  // the payload is being read closes that connection (the only way to stop the read into `dst`).
  // `watch` as for recv(), while the payload has not begun to arrive.
  Status wait_recv(const std::string& peer_id, const FrameMeta& meta, Deadline deadline,
                   std::span<const std::string> watch = {});
  // Ends a posting without waiting for its frame. When it returns the I/O thread no longer writes into
  // its `dst`; a payload being read at that moment closes its connection. No-op for a key not posted.
  void cancel_recv(const std::string& peer_id, const FrameMeta& meta);
  // post_recv() then wait_recv().
  Status recv_into(const std::string& peer_id, const FrameMeta& meta, DType dtype, std::span<std::byte> dst,
                   Deadline deadline);
  // Puts a frame recv() returned back in front of its mailbox, for a caller that learnt
  // after taking it that it must be read again later (a step that will be replayed).
  void unrecv(const std::string& peer_id, const FrameMeta& meta, Tensor tensor);

  const std::string& node_id() const;
  // The run id: as configured, or adopted from the first peer that accepted this joining node ("" until then).
  std::string run_id() const;
  // Ids of the joining nodes registered since the last call, in arrival order; each is returned once.
  std::vector<std::string> take_joiners();
  // Peers with a live connection.
  std::vector<std::string> connected_peers() const;
  // Why incoming connections were refused (bad frame, wrong run id, ...), oldest first, at most 64.
  std::vector<Status> refused_connections() const;
  // Bytes written so far by send() frames, per peer and kind.
  std::map<TrafficKey, TrafficStats> stats() const;
  // stats() summed over peers for one kind.
  TrafficStats sent(FrameKind kind) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ravnest::rt
