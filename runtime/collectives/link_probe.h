// Link probe: measures latency and bandwidth from this node to every other member of a
// group over the existing Transport, and shares the results so that every member holds
// the same link matrix.
//
// Guarantees:
//  * Every member calls probe_links() with the same member list and epoch. Pairs are
//    probed in rounds of a round-robin schedule (each member talks to at most one other
//    per round), so probes of different pairs never share a node at the same time.
//  * Per ordered pair (i -> j), i measures: latency = half the median round trip of
//    `pings` small CONTROL ping-pongs; bandwidth = bytes / (time from sending a bulk
//    frame to receiving j's acknowledgement - the median round trip), in bytes/s. A
//    small warm-up transfer sizes the timed one to take about `transfer_budget`, at most
//    `bulk_bytes`, so a slow link is not tied up for long.
//  * Each member fills its own row and sends it to every other member; every member then
//    holds the same matrix, bit for bit (rows are copied, never recomputed). Received
//    rows are checked (dtype, shape, finite values) and a bad one is kCorrupt naming the peer.
//  * Every wait is bounded by the caller's deadline; errors keep the transport's code and
//    name the peer, the phase and the epoch.
//  * Frames are CONTROL frames with step = kLinkProbeStepBase + epoch, apart from the
//    trainer's CONTROL steps (training steps, 1 << 62 evaluation, 1 << 63 start); the
//    microbatch field says the message (ping, pong, bulk, ack, row). See docs/routing.md.
// The probe needs a live connection to every other member (connect_mesh() makes one).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/collectives/ring_connect.h"
#include "runtime/collectives/ring_order.h"
#include "runtime/transport/transport.h"

namespace ravnest::rt {

// CONTROL frames of the probe use steps [kLinkProbeStepBase, kLinkProbeStepBase + 2^32).
inline constexpr uint64_t kLinkProbeStepBase = uint64_t{1} << 61;

// The microbatch field of a probe frame: which message it is.
enum class ProbeMessage : uint32_t {
  kPing = 1,     // U8 [8]; tensor_id = ping index
  kPong = 2,     // the ping echoed back; tensor_id = ping index
  kBulk = 3,     // U8 [bytes]; tensor_id 0 = warm-up, 1 = timed transfer
  kBulkAck = 4,  // U8 [1]; tensor_id as the bulk frame it acknowledges
  kRow = 5,      // F64 [2, N]: the sender's latencies (s) and bandwidths (bytes/s) to every member
};

// What was measured between the members of a group: row i is what member i measured
// towards each other member. Row-major N x N; the diagonal is 0.
struct LinkMatrix {
  size_t n = 0;
  std::vector<double> latency_s;      // one-way latency from i to j, seconds
  std::vector<double> bandwidth_Bps;  // from i to j, bytes per second
  double latency(size_t from, size_t to) const { return latency_s[from * n + to]; }
  double bandwidth(size_t from, size_t to) const { return bandwidth_Bps[from * n + to]; }
  // latency + bytes / bandwidth for every hop: the time to move one chunk of `bytes`.
  HopTimes hop_times(uint64_t bytes) const;
};

struct ProbeOptions {
  // Distinguishes successive probes on the same Transports (part of every frame's step);
  // every member passes the same value, a new one for each probe.
  uint32_t epoch = 0;
  int pings = 5;                                   // ping-pongs per direction, >= 1; the median is kept
  uint64_t bulk_bytes = uint64_t{1} << 20;         // the most a timed transfer sends, >= 1 KiB
  uint64_t warmup_bytes = uint64_t{64} << 10;      // the warm-up transfer (capped at bulk_bytes)
  std::chrono::milliseconds transfer_budget{500};  // the timed transfer is sized to take about this long
};

// Measures this member's row, exchanges rows with every other member and returns the
// whole matrix. `members` are node ids (members[rank] is this node), the same list on
// every member; the transport must be (or become, before the deadline) connected to all.
Result<LinkMatrix> probe_links(Transport& transport, const std::vector<std::string>& members, size_t rank,
                               const ProbeOptions& options, Deadline deadline);

// Connects `transport` (members[rank], listening) to every other member: it dials each
// member of a higher rank (unless already connected) and waits for the lower ones.
// Works after connect_ring() too (existing connections are kept).
Status connect_mesh(Transport& transport, const std::vector<RingMember>& members, size_t rank, Deadline deadline);

}  // namespace ravnest::rt
