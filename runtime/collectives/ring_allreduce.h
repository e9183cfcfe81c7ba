// RingAllreduce: sum or weighted mean of a float buffer across the members of a ring.
//
// Guarantees:
//  * After run() returns OK on every member, every member's buffer holds the same
//    values, bit for bit: the sum over members, or sum_i w_i x_i / sum_i w_i for the
//    weighted mean (weights are summed in double and travel with the data).
//  * Reduce-scatter then all-gather over N ragged segments (sizes differ by at most
//    one element; any size, including 0 and sizes below N), each segment split into
//    pipeline chunks, so sending, receiving and reducing overlap. A member sends
//    2(N-1) segments' worth of floats, about 2(N-1)/N of the buffer; see bytes_sent().
//    N = 1 is a no-op that sends nothing.
//  * Received chunks are read from the socket straight into place (Transport::post_recv):
//    reduce-scatter chunks into a scratch tensor, all-gather chunks into `data`; each
//    checked against its CRC-32C. After a failed run() (a corrupt chunk, a timeout, a
//    neighbour gone) `data` holds unspecified values; a corrupt chunk is never forwarded.
//  * Every wait has the caller's deadline. A neighbour that dies or stalls makes run()
//    fail with kNetwork or kTimeout naming the peer, the tag, the round and the step. With
//    watch_members, a member that fails elsewhere in the ring (its connection to this node
//    closed or declared dead by heartbeats) ends this node's waits at once too, with kNetwork.
//  * Frames carry the tag, so rings with different tags run concurrently on the same
//    Transports. Frame fields: step = tag << 32 | round, microbatch = step in the ring,
//    tensor_id = chunk (docs/allreduce.md).
// The algorithm and the frame encoding are documented in docs/allreduce.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/transport/transport.h"

namespace ravnest::rt {

enum class ReduceOp {
  kSum,           // result = sum_i x_i (the weight is ignored)
  kWeightedMean,  // result = sum_i w_i x_i / sum_i w_i; w_i >= 0, sum_i w_i > 0
};
const char* reduce_op_name(ReduceOp op);

struct RingOptions {
  std::vector<std::string> members;  // node ids in ring order; members[rank] is this node
  size_t rank = 0;
  // Distinguishes concurrent collectives on the same Transports; every member of
  // one ring must use the same tag, and two rings that share a Transport must not.
  uint32_t tag = 0;
  // Largest payload of one frame; chunks are smaller for small buffers (at most a quarter of a
  // segment, at least 32 KiB; docs/allreduce.md).
  size_t chunk_bytes = size_t{1} << 20;
  // A wait on the left neighbour also ends (kNetwork) when another member's connection to this node has failed:
  // for rings whose members may be replaced mid-round (backups in runs of several clusters), where every member
  // must learn of the loss at once. Off by default: a slow link's mesh connection declared dead by heartbeats
  // would otherwise fail rounds the ring could finish.
  bool watch_members = false;
};

// The half-open element range [begin, end) of segment `segment` when `size` elements
// are split into `parts` ragged segments (the first size % parts get one more element).
struct SegmentRange {
  size_t begin = 0;
  size_t end = 0;
  size_t size() const { return end - begin; }
};
SegmentRange ring_segment(size_t size, size_t parts, size_t segment);

class RingAllreduce {
 public:
  // Validates the options against the transport (this node's id at `rank`, ids unique,
  // chunk size at least one float).
  static Result<RingAllreduce> create(Transport& transport, RingOptions options);

  // Reduces `data` in place across the ring. Every member must call run() the same
  // number of times, with buffers of the same size and the same op. `weight` is this
  // member's weight for kWeightedMean (e.g. the samples it processed).
  Status run(std::span<float> data, ReduceOp op, double weight, Deadline deadline);

  // Payload bytes the last run() queued for the right neighbour: the data, plus
  // 8 bytes of weight per reduce-scatter step for kWeightedMean.
  uint64_t bytes_sent() const { return bytes_sent_; }
  size_t size() const { return options_.members.size(); }
  size_t rank() const { return options_.rank; }
  uint32_t tag() const { return options_.tag; }

 private:
  RingAllreduce(Transport& transport, RingOptions options) : transport_(&transport), options_(std::move(options)) {}

  struct Pass;  // the state of one run(), defined in ring_allreduce.cc

  Transport* transport_;
  RingOptions options_;
  uint32_t round_ = 0;  // run() calls so far; part of every frame's key
  uint64_t bytes_sent_ = 0;
  std::vector<float> scratch_;  // where reduce-scatter chunks land, kept across runs (docs/allreduce.md)
};

}  // namespace ravnest::rt
