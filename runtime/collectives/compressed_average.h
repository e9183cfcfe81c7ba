// Compressed parameter averaging: the lossy counterpart of a weighted-mean
// ring all-reduce, for links too slow to send dense parameters.
//
// Every member keeps the same `anchor` (the parameters agreed at the last
// round). A round sends only the compressed local progress: delta = x - anchor
// + residual, encoded with a lossy codec (top-k keeps a fraction of the
// largest entries); the part the codec dropped stays in the residual for the
// next round (error feedback). The encoded deltas travel by a ring all-gather
// (each member forwards the others' blocks), so every member decodes the same
// N blocks and computes, in double and in member order,
//   anchor += sum_i w_i D(delta_i) / sum_i w_i,   x = anchor,
// which leaves every member with bit-identical parameters.
// Frames: kind COLLECTIVE, step = (0x80000000 | tag) << 32 | round,
// microbatch = ring step (0..N-2), tensor id 0; payload uint8:
// [weight f64][encoded delta].
#pragma once

#include <span>
#include <string>
#include <vector>

#include "runtime/compress/codec.h"
#include "runtime/transport/transport.h"

namespace ravnest::rt {

class CompressedAverage {
 public:
  // `anchor` is the slice's current (agreed) value: the same on every member.
  static Result<CompressedAverage> create(Transport& transport, std::vector<std::string> members, size_t rank,
                                          uint32_t tag, CodecSpec codec, std::vector<float> anchor);

  // Averages `x` (this member's slice) with the others, weighted by `weight`
  // (e.g. samples trained since the last round); `x` becomes the new anchor.
  Status run(std::span<float> x, double weight, Deadline deadline);

  uint64_t bytes_sent() const { return bytes_sent_; }  // by the last run()
  // A new ring order (same members) and tag, keeping the anchor and residual.
  Status reorder(std::vector<std::string> members, size_t rank, uint32_t tag);
  size_t size() const { return members_.size(); }

 private:
  Transport* transport_ = nullptr;
  std::vector<std::string> members_;
  size_t rank_ = 0;
  uint32_t tag_ = 0;
  CodecSpec codec_;
  std::vector<float> anchor_, residual_;
  uint64_t round_ = 0;
  uint64_t bytes_sent_ = 0;
};

}  // namespace ravnest::rt
