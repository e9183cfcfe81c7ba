// Link probe (see link_probe.h): round-robin pairs, ping-pong and timed transfers, then a row exchange.
#include "runtime/collectives/link_probe.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace ravnest::rt {
namespace {

// A transfer that looks faster than this is taken to have taken this long (loopback
// without a relay can beat the ping estimate it is corrected by).
constexpr double kMinTransferSeconds = 1e-6;
constexpr uint64_t kMaxBulkBytes = uint64_t{256} << 20;
constexpr int kMaxPings = 1000;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

// The peer of `rank` in round `round` of the round-robin (circle method) schedule over
// `m` slots (m even; slot m-1 is a dummy when the group is odd). Every slot meets every
// other exactly once in rounds 0..m-2, and each round pairs the slots disjointly.
size_t round_partner(size_t rank, size_t round, size_t m) {
  const size_t k = m - 1;  // odd
  if (rank == k) {
    for (size_t i = 0; i < k; ++i)
      if ((2 * i) % k == round) return i;
  }
  if ((2 * rank) % k == round) return k;
  return (round + k - rank % k) % k;
}

class Prober {
 public:
  Prober(Transport& transport, const std::vector<std::string>& members, size_t rank, const ProbeOptions& options,
         Deadline deadline)
      : t_(transport),
        members_(members),
        rank_(rank),
        opt_(options),
        deadline_(deadline),
        step_(kLinkProbeStepBase + options.epoch) {}

  Result<LinkMatrix> run();

 private:
  FrameMeta meta(ProbeMessage message, uint32_t id) const {
    return FrameMeta{FrameKind::kControl, step_, static_cast<uint32_t>(message), id};
  }
  std::string where() const {
    return "link probe epoch " + std::to_string(opt_.epoch) + " (member '" + members_[rank_] + "', rank " +
           std::to_string(rank_) + " of " + std::to_string(members_.size()) + ")";
  }
  Status send(const std::string& peer, ProbeMessage message, uint32_t id, const Tensor& tensor, const char* what) {
    Status st = t_.send(peer, meta(message, id), tensor);
    return st.ok() ? st : st.with_context(where() + ": " + what + " to '" + peer + "'");
  }
  Result<Tensor> recv(const std::string& peer, ProbeMessage message, uint32_t id, const char* what) {
    auto got = t_.recv(peer, meta(message, id), deadline_);
    if (!got.ok()) return got.status().with_context(where() + ": " + what + " from '" + peer + "'");
    return got;
  }

  Status probe_pair(size_t peer);
  Result<double> ping(const std::string& peer);  // the median round trip, seconds
  Status answer_pings(const std::string& peer);
  Result<double> send_bulk(const std::string& peer, double rtt);  // bytes/s
  Status receive_bulk(const std::string& peer);
  Result<double> timed_transfer(const std::string& peer, uint32_t id, uint64_t bytes, double rtt);
  Result<LinkMatrix> exchange_rows();

  Transport& t_;
  const std::vector<std::string>& members_;
  size_t rank_;
  ProbeOptions opt_;
  Deadline deadline_;
  uint64_t step_;
  std::vector<double> latency_;    // this member's row
  std::vector<double> bandwidth_;  // this member's row
};

Result<LinkMatrix> Prober::run() {
  const size_t n = members_.size();
  latency_.assign(n, 0.0);
  bandwidth_.assign(n, 0.0);
  for (size_t j = 0; j < n; ++j) {
    if (j == rank_) continue;
    Status st = t_.wait_for_peer(members_[j], deadline_);
    if (!st.ok())
      return st.with_context(where() + ": waiting for a connection to '" + members_[j] + "' (connect_mesh())");
  }
  const size_t slots = n + n % 2;
  for (size_t round = 0; n > 1 && round + 1 < slots; ++round) {
    size_t peer = round_partner(rank_, round, slots);
    if (peer < n) RN_RETURN_IF_ERROR(probe_pair(peer));
  }
  return exchange_rows();
}

// The lower rank measures first, then the roles swap; both sides run the same steps.
Status Prober::probe_pair(size_t peer) {
  const std::string& id = members_[peer];
  double rtt = 0;
  if (rank_ < peer) {
    RN_ASSIGN_OR_RETURN(rtt, ping(id));
    RN_RETURN_IF_ERROR(answer_pings(id));
    RN_ASSIGN_OR_RETURN(bandwidth_[peer], send_bulk(id, rtt));
    RN_RETURN_IF_ERROR(receive_bulk(id));
  } else {
    RN_RETURN_IF_ERROR(answer_pings(id));
    RN_ASSIGN_OR_RETURN(rtt, ping(id));
    RN_RETURN_IF_ERROR(receive_bulk(id));
    RN_ASSIGN_OR_RETURN(bandwidth_[peer], send_bulk(id, rtt));
  }
  latency_[peer] = rtt / 2;
  return ok_status();
}

Result<double> Prober::ping(const std::string& peer) {
  std::vector<double> rtts;
  for (int k = 0; k < opt_.pings; ++k) {
    // Send a small CONTROL frame and wait for it to come back.
    auto start = Clock::now();
    RN_RETURN_IF_ERROR(
        send(peer, ProbeMessage::kPing, static_cast<uint32_t>(k), Tensor::zeros(DType::kU8, {8}), "ping"));
    RN_RETURN_IF_ERROR(recv(peer, ProbeMessage::kPong, static_cast<uint32_t>(k), "pong").status());
    rtts.push_back(seconds_since(start));
  }
  return median(std::move(rtts));
}

Status Prober::answer_pings(const std::string& peer) {
  for (int k = 0; k < opt_.pings; ++k) {
    // Echo each ping as soon as it arrives.
    RN_ASSIGN_OR_RETURN(Tensor got, recv(peer, ProbeMessage::kPing, static_cast<uint32_t>(k), "ping"));
    RN_RETURN_IF_ERROR(send(peer, ProbeMessage::kPong, static_cast<uint32_t>(k), got, "pong"));
  }
  return ok_status();
}

Result<double> Prober::timed_transfer(const std::string& peer, uint32_t id, uint64_t bytes, double rtt) {
  Tensor bulk = Tensor::zeros(DType::kU8, {static_cast<int64_t>(bytes)});
  auto start = Clock::now();
  RN_RETURN_IF_ERROR(send(peer, ProbeMessage::kBulk, id, bulk, "bulk transfer"));
  RN_RETURN_IF_ERROR(recv(peer, ProbeMessage::kBulkAck, id, "bulk acknowledgement").status());
  // The wait included one round trip (the data's delay and the acknowledgement's).
  double seconds = std::max(seconds_since(start) - rtt, kMinTransferSeconds);
  return static_cast<double>(bytes) / seconds;
}

Result<double> Prober::send_bulk(const std::string& peer, double rtt) {
  // Warm up and estimate, then size the timed transfer to the budget.
  const uint64_t warm = std::min(opt_.warmup_bytes, opt_.bulk_bytes);
  RN_ASSIGN_OR_RETURN(double estimate, timed_transfer(peer, 0, warm, rtt));
  double budget_s = std::chrono::duration<double>(opt_.transfer_budget).count();
  double sized = std::clamp(estimate * budget_s, static_cast<double>(warm), static_cast<double>(opt_.bulk_bytes));
  return timed_transfer(peer, 1, static_cast<uint64_t>(sized), rtt);
}

Status Prober::receive_bulk(const std::string& peer) {
  for (uint32_t id = 0; id < 2; ++id) {
    // Acknowledge each bulk frame once all of it is here.
    RN_ASSIGN_OR_RETURN(Tensor got, recv(peer, ProbeMessage::kBulk, id, "bulk transfer"));
    if (got.dtype() != DType::kU8 || got.rank() != 1) {
      return error(Code::kCorrupt, where(), ": bulk transfer ", id, " from '", peer, "' is ", dtype_name(got.dtype()),
                   " of rank ", got.rank(), "; expected U8 of rank 1 (is the peer running another version?)");
    }
    RN_RETURN_IF_ERROR(send(peer, ProbeMessage::kBulkAck, id, Tensor::zeros(DType::kU8, {1}), "bulk acknowledgement"));
  }
  return ok_status();
}

// Every member sends its row to every other one and receives theirs.
Result<LinkMatrix> Prober::exchange_rows() {
  const size_t n = members_.size();
  const int64_t width = static_cast<int64_t>(n);
  Tensor row = Tensor::empty(DType::kF64, {2, width});
  std::copy(latency_.begin(), latency_.end(), row.data<double>());
  std::copy(bandwidth_.begin(), bandwidth_.end(), row.data<double>() + n);
  for (size_t j = 0; j < n; ++j) {
    if (j != rank_) RN_RETURN_IF_ERROR(send(members_[j], ProbeMessage::kRow, 0, row, "link row"));
  }
  LinkMatrix matrix{n, std::vector<double>(n * n, 0.0), std::vector<double>(n * n, 0.0)};
  for (size_t i = 0; i < n; ++i) {
    Tensor got = row;
    if (i != rank_) {
      RN_ASSIGN_OR_RETURN(got, recv(members_[i], ProbeMessage::kRow, 0, "link row"));
      if (got.dtype() != DType::kF64 || got.shape() != Shape{2, width}) {
        return error(Code::kCorrupt, where(), ": link row from '", members_[i], "' is ", dtype_name(got.dtype()),
                     " of ", got.numel(), " values; expected F64 [2, ", n,
                     "] (do all members pass the same member list?)");
      }
    }
    const double* values = got.data<double>();
    for (size_t j = 0; j < n; ++j) {
      if (i == j) continue;
      double latency = values[j], bandwidth = values[n + j];
      if (!std::isfinite(latency) || latency < 0 || !std::isfinite(bandwidth) || bandwidth <= 0) {
        return error(Code::kCorrupt, where(), ": link row from '", members_[i], "' says latency ", latency,
                     " s and bandwidth ", bandwidth, " bytes/s to '", members_[j],
                     "'; expected a finite latency >= 0 and a finite bandwidth > 0");
      }
      matrix.latency_s[i * n + j] = latency;
      matrix.bandwidth_Bps[i * n + j] = bandwidth;
    }
  }
  return matrix;
}

Status validate(const Transport& transport, const std::vector<std::string>& members, size_t rank,
                const ProbeOptions& options) {
  if (rank >= members.size()) {
    return error(Code::kInvalidArgument, "link probe: rank ", rank, " is out of range for ", members.size(),
                 " members");
  }
  if (members[rank] != transport.node_id()) {
    return error(Code::kInvalidArgument, "link probe: member ", rank, " is '", members[rank],
                 "' but this transport is node '", transport.node_id(), "'");
  }
  if (std::set<std::string>(members.begin(), members.end()).size() != members.size()) {
    return error(Code::kInvalidArgument, "link probe: member ids must be unique");
  }
  if (options.pings < 1 || options.pings > kMaxPings) {
    return error(Code::kInvalidArgument, "link probe: pings is ", options.pings, "; give 1 to ", kMaxPings);
  }
  if (options.bulk_bytes < 1024 || options.bulk_bytes > kMaxBulkBytes) {
    return error(Code::kInvalidArgument, "link probe: bulk_bytes is ", options.bulk_bytes, "; give 1024 to ",
                 kMaxBulkBytes);
  }
  if (options.warmup_bytes < 1 || options.transfer_budget.count() <= 0) {
    return error(Code::kInvalidArgument, "link probe: warmup_bytes (", options.warmup_bytes, ") and transfer_budget (",
                 options.transfer_budget.count(), " ms) must be > 0");
  }
  return ok_status();
}

}  // namespace

HopTimes LinkMatrix::hop_times(uint64_t bytes) const {
  HopTimes times{n, std::vector<double>(n * n, 0.0)};
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (i != j) times.seconds[i * n + j] = latency(i, j) + static_cast<double>(bytes) / bandwidth(i, j);
    }
  }
  return times;
}

Result<LinkMatrix> probe_links(Transport& transport, const std::vector<std::string>& members, size_t rank,
                               const ProbeOptions& options, Deadline deadline) {
  RN_RETURN_IF_ERROR(validate(transport, members, rank, options));
  return Prober(transport, members, rank, options, deadline).run();
}

Status connect_mesh(Transport& transport, const std::vector<RingMember>& members, size_t rank, Deadline deadline) {
  if (rank >= members.size() || members[rank].id != transport.node_id()) {
    return error(Code::kInvalidArgument, "mesh connect: rank ", rank, " of ", members.size(),
                 " members is not this transport's node '", transport.node_id(), "'");
  }
  // Dial every higher rank, then wait for every lower one: each pair is dialled once.
  for (size_t j = rank + 1; j < members.size(); ++j) {
    Status st = transport.connect(members[j].id, members[j].host, members[j].port, deadline);
    if (!st.ok())
      return st.with_context("mesh member '" + members[rank].id + "' connecting to '" + members[j].id + "'");
  }
  for (size_t j = 0; j < rank; ++j) {
    Status st = transport.wait_for_peer(members[j].id, deadline);
    if (!st.ok()) return st.with_context("mesh member '" + members[rank].id + "' waiting for '" + members[j].id + "'");
  }
  return ok_status();
}

}  // namespace ravnest::rt
