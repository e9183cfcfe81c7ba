#include "runtime/collectives/compressed_average.h"

#include <cstring>

namespace ravnest::rt {

Result<CompressedAverage> CompressedAverage::create(Transport& transport, std::vector<std::string> members,
                                                    size_t rank, uint32_t tag, CodecSpec codec,
                                                    std::vector<float> anchor) {
  if (members.empty() || rank >= members.size())
    return error(Code::kInvalidArgument, "compressed averaging: rank ", rank, " of ", members.size(), " members");
  if (tag & 0x80000000u) return error(Code::kInvalidArgument, "compressed averaging: tag ", tag, " too large");
  CompressedAverage c;
  c.transport_ = &transport;
  c.members_ = std::move(members);
  c.rank_ = rank;
  c.tag_ = tag;
  c.codec_ = codec;
  c.residual_.assign(anchor.size(), 0.0f);
  c.anchor_ = std::move(anchor);
  return c;
}

Status CompressedAverage::reorder(std::vector<std::string> members, size_t rank, uint32_t tag) {
  if (members.size() != members_.size() || rank >= members.size() || (tag & 0x80000000u))
    return error(Code::kInvalidArgument, "compressed averaging: bad re-order (", members.size(), " members, rank ",
                 rank, ", tag ", tag, ")");
  members_ = std::move(members);
  rank_ = rank;
  tag_ = tag;
  return ok_status();
}

Status CompressedAverage::run(std::span<float> x, double weight, Deadline deadline) {
  const size_t n = members_.size();
  const int64_t count = static_cast<int64_t>(x.size());
  if (x.size() != anchor_.size())
    return error(Code::kInvalidArgument, "compressed averaging tag ", tag_, ": slice of ", x.size(),
                 " elements, anchor of ", anchor_.size());
  if (!(weight >= 0)) return error(Code::kInvalidArgument, "compressed averaging: negative weight ", weight);
  const uint64_t round = round_++;
  bytes_sent_ = 0;
  auto where = [&] { return str_cat("compressed averaging tag ", tag_, " round ", round); };

  // Local progress plus what earlier rounds did not send; keep what this one drops.
  std::vector<float> delta(x.size());
  for (size_t i = 0; i < x.size(); ++i) delta[i] = x[i] - anchor_[i] + residual_[i];
  RN_ASSIGN_OR_RETURN(std::vector<uint8_t> encoded, encode(codec_.codec, delta.data(), count, codec_.params));
  std::vector<float> sent(x.size());
  RN_RETURN_IF_ERROR(decode(codec_.codec, encoded, sent.data(), count));
  for (size_t i = 0; i < x.size(); ++i) residual_[i] = delta[i] - sent[i];

  // blocks[i]: member i's [weight][encoded delta].
  std::vector<Tensor> blocks(n);
  blocks[rank_] = Tensor::empty(DType::kU8, {static_cast<int64_t>(sizeof(double) + encoded.size())});
  std::memcpy(blocks[rank_].raw(), &weight, sizeof(double));
  if (!encoded.empty()) std::memcpy(blocks[rank_].data<uint8_t>() + sizeof(double), encoded.data(), encoded.size());

  // Ring all-gather: at step k send block (rank - k) to the right neighbour and
  // receive block (rank - k - 1) from the left one.
  const std::string& right = members_[(rank_ + 1) % n];
  const std::string& left = members_[(rank_ + n - 1) % n];
  const uint64_t step = (uint64_t{0x80000000u | tag_} << 32) | (round & 0xffffffffu);
  for (size_t k = 0; k + 1 < n; ++k) {
    const size_t out = (rank_ + n - k) % n, in = (rank_ + 2 * n - k - 1) % n;
    FrameMeta meta{FrameKind::kCollective, step, static_cast<uint32_t>(k), 0};
    RN_RETURN_IF_ERROR(transport_->send(right, meta, blocks[out]).with_context(where()));
    bytes_sent_ += blocks[out].bytes();
    auto got = transport_->recv(left, meta, deadline);
    if (!got.ok()) return got.status().with_context(where() + ": waiting for the left neighbour '" + left + "'");
    if (got->dtype() != DType::kU8 || got->numel() < static_cast<int64_t>(sizeof(double)))
      return error(Code::kCorrupt, where(), ": malformed block from '", left, "'");
    blocks[in] = std::move(got).value();
  }

  // Every member decodes the same blocks in the same order: identical results.
  std::vector<double> sum(x.size(), 0.0);
  double total = 0;
  std::vector<float> decoded(x.size());
  for (size_t i = 0; i < n; ++i) {
    double w;
    std::memcpy(&w, blocks[i].raw(), sizeof(double));
    if (!(w >= 0)) return error(Code::kCorrupt, where(), ": member '", members_[i], "' sent weight ", w);
    std::span<const uint8_t> bytes(blocks[i].data<uint8_t>() + sizeof(double), blocks[i].bytes() - sizeof(double));
    Status st = decode(codec_.codec, bytes, decoded.data(), count);
    if (!st.ok()) return st.with_context(where() + ": block of '" + members_[i] + "'");
    for (size_t j = 0; j < x.size(); ++j) sum[j] += w * decoded[j];
    total += w;
  }
  if (!(total > 0)) return error(Code::kInvalidArgument, where(), ": the weights sum to ", total);
  for (size_t j = 0; j < x.size(); ++j) {
    anchor_[j] = static_cast<float>(static_cast<double>(anchor_[j]) + sum[j] / total);
    x[j] = anchor_[j];
  }
  return ok_status();
}

}  // namespace ravnest::rt
