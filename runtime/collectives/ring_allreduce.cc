// RingAllreduce: chunked, pipelined reduce-scatter + all-gather over the Transport
// (see ring_allreduce.h for the guarantees and docs/allreduce.md for the protocol).
//
// No copies: every frame is sent from the caller's buffer (Tensor::view; the first step
// scales segment r in place for the weighted mean), reduce-scatter chunks are read from the
// socket into a scratch slot kept across runs and added into `data`, and all-gather chunks are
// read straight into their final place (Transport::post_recv). Before run() returns, every
// posting not taken is cancelled and Transport::wait_sent() waits until the frames sent from
// `data` are written, so the caller may reuse `data` at once, after success or failure.
#include "runtime/collectives/ring_allreduce.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

namespace ravnest::rt {
namespace {

// tensor_id of the frame that carries the partial sum of weights (kWeightedMean only).
constexpr uint32_t kWeightFrameId = std::numeric_limits<uint32_t>::max();
// Chunk indices are tensor ids below kWeightFrameId.
constexpr uint64_t kMaxChunksPerSegment = kWeightFrameId;
// Ring steps (microbatch field) count up to 2(N-1); keep N small enough that they fit.
constexpr size_t kMaxMembers = size_t{1} << 20;

// mine = weight * mine, rounded once to float.
void scale_in_place(float* mine, size_t n, double weight) {
  for (size_t i = 0; i < n; ++i) mine[i] = static_cast<float>(weight * mine[i]);
}

// kSum: mine = received + mine in float, one rounding per ring step. Float addition gives
// bit for bit the double-precision sum rounded to float: rounding twice (to a double's 53
// bits, then to float's 24) equals rounding once when 53 >= 2 * 24 + 2 (Figueroa, "When is
// double rounding innocuous?", 1995).
void accumulate_sum(const float* __restrict received, float* __restrict mine, size_t n) {
  for (size_t i = 0; i < n; ++i) mine[i] = received[i] + mine[i];
}

// kWeightedMean: mine = (received + weight * mine) * inverse in double, rounded once to float,
// so the weights and the final division add only one rounding per ring step.
void accumulate_weighted(const float* __restrict received, float* __restrict mine, size_t n, double weight,
                         double inverse) {
  for (size_t i = 0; i < n; ++i) {
    mine[i] = static_cast<float>((static_cast<double>(received[i]) + weight * mine[i]) * inverse);
  }
}

}  // namespace

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kWeightedMean: return "weighted mean";
  }
  return "?";
}

SegmentRange ring_segment(size_t size, size_t parts, size_t segment) {
  const size_t base = size / parts;
  const size_t extra = size % parts;  // the first `extra` segments get one more element
  SegmentRange range;
  range.begin = segment * base + std::min(segment, extra);
  range.end = range.begin + base + (segment < extra ? 1 : 0);
  return range;
}

Result<RingAllreduce> RingAllreduce::create(Transport& transport, RingOptions options) {
  const size_t n = options.members.size();
  if (n == 0) return error(Code::kInvalidArgument, "ring all-reduce: the ring has no members; list at least this node");
  if (n > kMaxMembers) {
    return error(Code::kInvalidArgument, "ring all-reduce: ", n, " members exceed the limit of ", kMaxMembers);
  }
  if (options.rank >= n) {
    return error(Code::kInvalidArgument, "ring all-reduce: rank ", options.rank, " is out of range for a ring of ", n,
                 " members");
  }
  if (options.members[options.rank] != transport.node_id()) {
    return error(Code::kInvalidArgument, "ring all-reduce: member ", options.rank, " is '",
                 options.members[options.rank], "' but this transport is node '", transport.node_id(),
                 "'; pass the rank of this node in the member list");
  }
  std::set<std::string> seen;
  for (const std::string& id : options.members) {
    if (id.empty()) return error(Code::kInvalidArgument, "ring all-reduce: a member id is empty");
    if (!seen.insert(id).second) {
      return error(Code::kInvalidArgument, "ring all-reduce: member '", id,
                   "' appears twice in the ring; every member must be listed once");
    }
  }
  if (options.chunk_bytes < sizeof(float)) {
    return error(Code::kInvalidArgument, "ring all-reduce: chunk_bytes is ", options.chunk_bytes,
                 "; it must hold at least one float (4 bytes)");
  }
  return RingAllreduce(transport, std::move(options));
}

namespace {

// Floats per chunk: chunk_bytes, but at most a quarter of a segment (at least 32 KiB), so a
// small buffer still goes round in several chunks whose sends, receives and sums overlap
// (1 MiB over 2 members: 0.21 GB/s busbw with 256 KiB chunks, 0.41 with 64 KiB), while a
// large one pays the per-chunk cost (frame, posting, wake-up) rarely (16 MiB over 4 members,
// 16 idle cores: 1.88 GB/s busbw with 256 KiB chunks, 2.53 with 1 MiB; BENCHMARKS.md section 3).
// The same on every member: it depends only on the buffer size, the member count and the options.
size_t ring_chunk_elems(size_t chunk_bytes, size_t size, size_t n) {
  const size_t segment_bytes = ring_segment(size, n, 0).size() * sizeof(float);
  const size_t bytes = std::min(chunk_bytes, std::max<size_t>(size_t{32} << 10, segment_bytes / 4));
  return std::max<size_t>(1, bytes / sizeof(float));
}

}  // namespace

// One run(): the buffer, the neighbours and the frame keys of this round.
struct RingAllreduce::Pass {
  Transport& transport;
  const RingOptions& options;
  std::span<float> data;
  ReduceOp op;
  double weight;
  Deadline deadline;
  uint32_t round;
  uint64_t& bytes_sent;
  std::vector<float>& scratch;  // RingAllreduce::scratch_, kept across runs

  size_t n = options.members.size();
  size_t r = options.rank;
  const std::string& left = options.members[(r + n - 1) % n];
  const std::string& right = options.members[(r + 1) % n];
  size_t chunk_elems = ring_chunk_elems(options.chunk_bytes, data.size(), n);
  uint32_t ring_steps = static_cast<uint32_t>(n - 1);  // steps per phase
  // The members other than this one and its left neighbour: a wait on the left neighbour also ends when one of
  // them fails, since the chunks it waits for would never come (rings of 3 or more).
  std::vector<std::string> others = [&] {
    std::vector<std::string> ids;
    for (size_t i = 0; i < n; ++i)
      if (options.watch_members && i != r && options.members[i] != left) ids.push_back(options.members[i]);
    return ids;
  }();

  // Segment (r - k) mod N, for 0 <= k < N.
  size_t segment(size_t k) const { return (r + n - k) % n; }
  SegmentRange seg_range(size_t s) const { return ring_segment(data.size(), n, s); }
  uint32_t chunks(size_t s) const {
    return static_cast<uint32_t>((seg_range(s).size() + chunk_elems - 1) / chunk_elems);
  }
  SegmentRange chunk_range(size_t s, uint32_t c) const {
    SegmentRange seg = seg_range(s);
    SegmentRange range;
    range.begin = seg.begin + size_t{c} * chunk_elems;
    range.end = std::min(seg.end, range.begin + chunk_elems);
    return range;
  }

  // Frame key: step = tag << 32 | round, microbatch = ring step, tensor_id = chunk.
  FrameMeta meta(uint32_t ring_step, uint32_t chunk) const {
    return FrameMeta{FrameKind::kCollective, (uint64_t{options.tag} << 32) | round, ring_step, chunk};
  }

  // "ring all-reduce tag 7 round 3 (member 'b', rank 1 of 3): all-gather step 0, chunk 2"
  std::string where(uint32_t ring_step, uint32_t chunk) const {
    std::string what = ring_step < ring_steps ? str_cat("reduce-scatter step ", ring_step)
                                              : str_cat("all-gather step ", ring_step - ring_steps);
    what += chunk == kWeightFrameId ? ", weight" : str_cat(", chunk ", chunk);
    return str_cat("ring all-reduce tag ", options.tag, " round ", round, " (member '", options.members[r], "', rank ",
                   r, " of ", n, "): ", what);
  }

  Status send(uint32_t ring_step, uint32_t chunk, const Tensor& t) {
    // Checksummed and written on this thread, which would otherwise wait for the next chunk.
    WireCodec direct;
    direct.write_in_send = true;
    Status st = transport.send(right, meta(ring_step, chunk), t, direct);
    if (!st.ok()) return st.with_context(where(ring_step, chunk) + " to right neighbour '" + right + "'");
    bytes_sent += t.bytes();
    return ok_status();
  }

  // The data chunks this member receives, in the order run() takes them: the reduce-scatter steps,
  // then the all-gather steps. Each is a posted receive (Transport::post_recv), so the I/O thread
  // reads it from the socket straight into place: reduce-scatter chunks into a slot of `scratch`
  // (added into `data`, which is forwarded from there), all-gather chunks into their final place
  // in `data`. All-gather chunks may be posted while reduce-scatter still uses `data`: the finished
  // chunk of a segment comes after this member's contribution to it was written to the socket,
  // so nothing lands on a range before this member is done with it.
  struct Landing {
    uint32_t ring_step = 0;
    uint32_t chunk = 0;
    SegmentRange range;
  };
  // Posted ahead of the one waited for: enough to keep the I/O thread reading into place while
  // this thread reduces, few enough to bound the scratch (16 slots of a chunk, 16 MiB at 1 MiB).
  // Landing j uses slot j mod kPostAhead, free again once landing j - 1 has been added.
  static constexpr size_t kPostAhead = 16;
  size_t slot_elems() const { return std::min(chunk_elems, seg_range(0).size()); }
  std::vector<Landing> landings = {};
  size_t next_wait = 0;  // landings [next_wait, posted_end) are posted and not yet taken
  size_t posted_end = 0;

  void plan_landings() {
    for (uint32_t k = 0; k < 2 * ring_steps; ++k) {
      // Reduce-scatter step k receives segment (r - k - 1) mod N, all-gather step k segment (r - k) mod N.
      const size_t s = k < ring_steps ? segment(k + 1) : segment(k - ring_steps);
      for (uint32_t c = 0; c < chunks(s); ++c) landings.push_back(Landing{k, c, chunk_range(s, c)});
    }
    scratch.resize(std::min(kPostAhead, landings.size()) * slot_elems());
  }

  // Where landing j is read to.
  float* landing_dst(size_t j) {
    const Landing& l = landings[j];
    return l.ring_step < ring_steps ? scratch.data() + (j % kPostAhead) * slot_elems() : data.data() + l.range.begin;
  }

  Status post_up_to(size_t end) {
    for (end = std::min(end, landings.size()); posted_end < end; ++posted_end) {
      const Landing& l = landings[posted_end];
      float* dst = landing_dst(posted_end);
      Status st = transport.post_recv(left, meta(l.ring_step, l.chunk), DType::kF32,
                                      std::as_writable_bytes(std::span<float>(dst, l.range.size())));
      if (!st.ok()) return st.with_context(where(l.ring_step, l.chunk));
    }
    return ok_status();
  }

  // Waits for the next data chunk, which is then at landing_dst(next_wait - 1); another size means the
  // members disagree on the buffer size or the op.
  Result<const Landing*> land() {
    RN_RETURN_IF_ERROR(post_up_to(next_wait + kPostAhead));
    const Landing& l = landings[next_wait++];
    Status st = transport.wait_recv(left, meta(l.ring_step, l.chunk), deadline, others);
    if (st.code() == Code::kCorrupt) {
      return error(Code::kCorrupt, where(l.ring_step, l.chunk), " from left neighbour '", left, "': ", st.message(),
                   "; every member must run with the same buffer size (", data.size(), " here), op and chunk_bytes");
    }
    if (!st.ok()) return st.with_context(where(l.ring_step, l.chunk) + " from left neighbour '" + left + "'");
    return &l;
  }

  // Ends the postings not taken (a failed run), so that nothing lands in `data` after run() returns.
  ~Pass() {
    for (size_t i = next_wait; i < posted_end; ++i) {
      transport.cancel_recv(left, meta(landings[i].ring_step, landings[i].chunk));
    }
  }

  // Receives a tensor of `dtype` and `elems` elements; another shape means the
  // members disagree on the buffer size or the op.
  Result<Tensor> recv(uint32_t ring_step, uint32_t chunk, DType dtype, size_t elems) {
    Result<Tensor> t = transport.recv(left, meta(ring_step, chunk), deadline, others);
    if (!t.ok()) return t.status().with_context(where(ring_step, chunk) + " from left neighbour '" + left + "'");
    if (t->dtype() != dtype || t->rank() != 1 || static_cast<uint64_t>(t->numel()) != elems) {
      return error(Code::kCorrupt, where(ring_step, chunk), ": left neighbour '", left, "' sent a ",
                   dtype_name(t->dtype()), " tensor of shape ", shape_str(t->shape()), " where ", dtype_name(dtype),
                   " of shape ", elems, " was expected; every member must run with the same buffer size (", data.size(),
                   " here), op and chunk_bytes");
    }
    return t;
  }

  // Sends data[range] as it is: the transport reads it from the caller's buffer (see the file comment).
  Status send_range(uint32_t ring_step, uint32_t chunk, SegmentRange range) {
    return send(ring_step, chunk,
                Tensor::view(DType::kF32, {static_cast<int64_t>(range.size())}, data.data() + range.begin));
  }

  Status send_weight(uint32_t ring_step, double w) {
    Tensor t = Tensor::empty(DType::kF64, {1});
    *t.data<double>() = w;
    return send(ring_step, kWeightFrameId, t);
  }

  Status run() {
    const bool mean = op == ReduceOp::kWeightedMean;
    const double own = mean ? weight : 1.0;
    // Rank r owns segment (r + 1) mod N after reduce-scatter; it sends that one first in all-gather.
    // Reduce-scatter step 0: send segment r, scaled by the own weight, to the right neighbour.
    // Segment r is scaled in place (all-gather overwrites it with the result) and sent from `data`.
    plan_landings();
    if (mean) RN_RETURN_IF_ERROR(send_weight(0, own));
    for (uint32_t c = 0; c < chunks(r); ++c) {
      const SegmentRange range = chunk_range(r, c);
      if (mean) scale_in_place(data.data() + range.begin, range.size(), own);
      RN_RETURN_IF_ERROR(send_range(0, c, range));
    }
    // Reduce-scatter steps k = 0..N-2: receive segment (r - k - 1) mod N from the left neighbour,
    // add the own contribution, and forward it as step k + 1; the last step's segment is complete.
    for (uint32_t k = 0; k < ring_steps; ++k) {
      const size_t s = segment(k + 1);
      const bool last = k + 1 == ring_steps;
      double inverse = 1.0;  // 1 / sum of weights, applied by the segment's owner
      if (mean) {
        // The partial sum of weights comes first and goes on before the data.
        RN_ASSIGN_OR_RETURN(Tensor w, recv(k, kWeightFrameId, DType::kF64, 1));
        const double total = *w.data<double>() + own;
        if (!last) {
          RN_RETURN_IF_ERROR(send_weight(k + 1, total));
        } else if (!(total > 0) || !std::isfinite(total)) {
          return error(
              Code::kInvalidArgument, where(k, kWeightFrameId), ": the weights of the ring sum to ", total,
              "; a weighted mean needs a positive, finite total (pass e.g. the samples each member processed)");
        } else {
          inverse = 1.0 / total;
        }
      }
      for (uint32_t c = 0; c < chunks(s); ++c) {
        RN_ASSIGN_OR_RETURN(const Landing* l, land());
        const float* received = landing_dst(next_wait - 1);
        // The sum so far replaces the own contribution in `data` (the last step's is the result).
        float* mine = data.data() + l->range.begin;
        if (mean) {
          accumulate_weighted(received, mine, l->range.size(), own, inverse);
        } else {
          accumulate_sum(received, mine, l->range.size());
        }
        // Forwarded as step k + 1; after the last step, as all-gather step 0 (the finished segment (r + 1) mod N).
        RN_RETURN_IF_ERROR(send_range(k + 1, c, l->range));
      }
    }
    // All-gather steps k = 0..N-2: receive finished segment (r - k) mod N from the left neighbour,
    // store it, and forward it as step k + 1 unless the right neighbour already has it (last step).
    for (uint32_t k = 0; k < ring_steps; ++k) {
      const size_t s = segment(k);
      for (uint32_t c = 0; c < chunks(s); ++c) {
        RN_ASSIGN_OR_RETURN(const Landing* l, land());  // now in its final place in `data`
        if (k + 1 < ring_steps) RN_RETURN_IF_ERROR(send_range(ring_steps + k + 1, c, l->range));
      }
    }
    return ok_status();
  }
};

Status RingAllreduce::run(std::span<float> data, ReduceOp op, double weight, Deadline deadline) {
  bytes_sent_ = 0;
  const uint32_t round = round_++;  // counted even when this run fails, so members stay in step
  const size_t n = options_.members.size();
  if (op == ReduceOp::kWeightedMean && (!(weight >= 0) || !std::isfinite(weight))) {
    return error(Code::kInvalidArgument, "ring all-reduce tag ", options_.tag, " round ", round, " (member '",
                 options_.members[options_.rank], "'): weight ", weight,
                 " is invalid; a weighted mean needs a finite weight >= 0");
  }
  if (n == 1) {
    if (op == ReduceOp::kWeightedMean && weight == 0) {
      return error(Code::kInvalidArgument, "ring all-reduce tag ", options_.tag, " round ", round,
                   ": the only member's weight is 0; a weighted mean needs a positive total");
    }
    return ok_status();  // the sum, or weighted mean, of one buffer is itself
  }
  const size_t chunk_elems = ring_chunk_elems(options_.chunk_bytes, data.size(), n);
  const size_t largest_segment = ring_segment(data.size(), n, 0).size();
  if ((largest_segment + chunk_elems - 1) / chunk_elems >= kMaxChunksPerSegment) {
    return error(Code::kInvalidArgument, "ring all-reduce tag ", options_.tag, ": ", data.size(),
                 " floats need too many chunks of ", options_.chunk_bytes, " bytes; raise chunk_bytes");
  }
  Status st;
  {
    Pass pass{*transport_, options_, data, op, weight, deadline, round, bytes_sent_, scratch_};
    st = pass.run();
  }  // ~Pass ended every posting not taken: nothing more lands in `data`
  // Nor is anything more read from it: wait until the frames sent from it are written (a failed run
  // gives them a second past the deadline, then the transport drops them with the connection).
  const std::string& right = options_.members[(options_.rank + 1) % n];
  Status sent = transport_->wait_sent(right, std::max(deadline, Clock::now() + std::chrono::seconds(1)));
  if (st.ok() && !sent.ok()) {
    return sent.with_context(str_cat("ring all-reduce tag ", options_.tag, " round ", round, " (member '",
                                     options_.members[options_.rank], "'): sending to right neighbour '", right, "'"));
  }
  return st;
}

}  // namespace ravnest::rt
