// Cluster formation by a dynamic program over machines sorted by speed (see clusters.h).
#include "partitioner/clusters.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <map>
#include <sstream>

namespace ravnest::part {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

struct Evaluation {
  bool feasible = false;
  Cluster cluster;
  std::string why_not;  // when infeasible: which machine lacks how much
};

class Former {
 public:
  Former(const DeviceSet& devices, const ModelTotals& model, const ClusterOptions& options)
      : devices_(devices), model_(model), opt_(options) {}

  Result<ClusterPlan> run();

 private:
  double seconds(size_t machine) const { return seconds_[machine]; }
  const std::string& id(size_t machine) const { return devices_.devices[machine].id; }
  // The cluster of `members` (any order): pipeline order, times, memory check.
  Evaluation evaluate(std::vector<size_t> members) const;
  // Averaging time and the link that sets it.
  std::pair<double, LinkEstimate> averaging(const std::vector<Cluster>& clusters) const;
  double total(const std::vector<Cluster>& clusters, double averaging_s) const;
  // Best plan with exactly `count` clusters over `order_` (empty if none).
  std::vector<Cluster> best_with(int count);
  std::string reason_left_out(size_t machine, const std::vector<Cluster>& clusters, double current_total) const;
  std::string explain(const ClusterPlan& plan) const;

  const DeviceSet& devices_;
  const ModelTotals& model_;
  const ClusterOptions& opt_;
  std::vector<double> seconds_;  // per device: one micro-batch of the whole model
  std::vector<size_t> order_;    // workers, fastest first
  std::map<std::pair<size_t, size_t>, Evaluation> runs_;  // (first, length) in order_ -> evaluation
};

Evaluation Former::evaluate(std::vector<size_t> members) const {
  Evaluation ev;
  // Pipeline order: the most memory first (the first stage holds the most micro-batches), ties by id.
  std::sort(members.begin(), members.end(), [&](size_t a, size_t b) {
    const DeviceProfile& da = devices_.devices[a];
    const DeviceProfile& db = devices_.devices[b];
    return da.memory_bytes != db.memory_bytes ? da.memory_bytes > db.memory_bytes : da.id < db.id;
  });
  const int p = static_cast<int>(members.size());
  double speed = 0, slowest = 0;
  for (size_t m : members) {
    speed += 1 / seconds(m);
    slowest = std::max(slowest, seconds(m));
  }
  double compute = 1 / speed + (p > 1 ? 0.5 * opt_.largest_op_fraction * slowest : 0);
  double hop = 0;
  for (int s = 0; s + 1 < p; ++s) {
    LinkEstimate link = devices_.link_between(members[static_cast<size_t>(s)], members[static_cast<size_t>(s) + 1],
                                              opt_.unknown_link);
    hop = std::max(hop, 2 * link.transfer_seconds(model_.boundary_bytes));  // activation forward, gradient back
  }
  // Memory: each member's share of the model follows its speed.
  std::ostringstream why;
  for (int s = 0; s < p; ++s) {
    size_t m = members[static_cast<size_t>(s)];
    double share = (1 / seconds(m)) / speed;
    StageFootprint fp{model_.param_bytes * share, model_.activation_bytes * share, opt_.workspace_bytes};
    double need = stage_memory(fp, p, s, opt_.memory).total();
    double have = static_cast<double>(devices_.devices[m].memory_bytes);
    if (need > have) {
      why << "'" << id(m) << "' (stage " << s << " of " << p << ", " << std::fixed << std::setprecision(0)
          << share * 100 << "% of the model) needs " << need << " bytes, has " << have << ", short by " << need - have
          << "; ";
    }
  }
  ev.why_not = why.str();
  ev.feasible = ev.why_not.empty();
  ev.cluster.machines = std::move(members);
  ev.cluster.bottleneck_s = std::max(compute, hop);
  ev.cluster.step_s = static_cast<double>(opt_.memory.microbatches + p - 1) * ev.cluster.bottleneck_s;
  ev.cluster.samples_per_s =
      static_cast<double>(opt_.memory.microbatches) * opt_.samples_per_microbatch / ev.cluster.step_s;
  return ev;
}

std::pair<double, LinkEstimate> Former::averaging(const std::vector<Cluster>& clusters) const {
  const size_t c = clusters.size();
  if (c < 2) return {0, LinkEstimate{}};
  LinkEstimate slowest{std::numeric_limits<double>::max(), 0, ""};
  double worst_latency = 0;
  size_t min_stages = std::numeric_limits<size_t>::max();
  for (size_t a = 0; a < c; ++a) {
    min_stages = std::min(min_stages, clusters[a].machines.size());
    for (size_t b = a + 1; b < c; ++b)
      for (size_t x : clusters[a].machines)
        for (size_t y : clusters[b].machines) {
          LinkEstimate l = devices_.link_between(x, y, opt_.unknown_link);
          if (l.bandwidth_bps < slowest.bandwidth_bps) slowest = l;
          worst_latency = std::max(worst_latency, l.latency_s);
        }
  }
  const double cd = static_cast<double>(c);
  double bytes = model_.param_bytes / static_cast<double>(min_stages);
  double t = 2 * (cd - 1) / cd * bytes / slowest.bytes_per_s() + 2 * (cd - 1) * worst_latency;
  return {t, slowest};
}

double Former::total(const std::vector<Cluster>& clusters, double averaging_s) const {
  double sum = 0;
  const double k = opt_.average_every;
  for (const Cluster& cl : clusters) {
    double samples = static_cast<double>(opt_.memory.microbatches) * opt_.samples_per_microbatch;
    sum += samples * k / (k * cl.step_s + averaging_s);
  }
  return sum;
}

std::vector<Cluster> Former::best_with(int count) {
  const size_t n = order_.size();
  const size_t c = static_cast<size_t>(count);
  const size_t max_len = opt_.stages_per_cluster > 0 ? static_cast<size_t>(opt_.stages_per_cluster)
                                                     : static_cast<size_t>(std::max(1, opt_.max_stages));
  const size_t min_len = opt_.stages_per_cluster > 0 ? max_len : 1;
  // best[i][k]: the largest sum of cluster throughputs with k clusters among order_[0, i).
  std::vector<std::vector<double>> best(n + 1, std::vector<double>(c + 1, kNegInf));
  std::vector<std::vector<std::pair<size_t, bool>>> from(n + 1, std::vector<std::pair<size_t, bool>>(c + 1));
  best[0][0] = 0;
  for (size_t i = 0; i < n; ++i) {
    // k descending: on a tie, the earlier (faster, then lower id) machines win.
    for (size_t k = c + 1; k-- > 0;) {
      if (best[i][k] == kNegInf) continue;
      // Leave order_[i] out.
      if (best[i][k] > best[i + 1][k]) {
        best[i + 1][k] = best[i][k];
        from[i + 1][k] = {i, false};
      }
      if (k == c) continue;
      // A cluster of order_[i, i + len).
      for (size_t len = min_len; len <= max_len && i + len <= n; ++len) {
        auto key = std::make_pair(i, len);
        if (!runs_.count(key))
          runs_[key] = evaluate(std::vector<size_t>(order_.begin() + static_cast<long>(i),
                                                    order_.begin() + static_cast<long>(i + len)));
        const Evaluation& ev = runs_[key];
        if (!ev.feasible) continue;
        double v = best[i][k] + ev.cluster.samples_per_s;
        if (v > best[i + len][k + 1] * (1 + 1e-12)) {
          best[i + len][k + 1] = v;
          from[i + len][k + 1] = {i, true};
        }
      }
    }
  }
  std::vector<Cluster> out;
  if (best[n][c] == kNegInf) return out;
  size_t i = n, k = c;
  while (i > 0) {
    auto [prev, is_cluster] = from[i][k];
    if (is_cluster) {
      out.push_back(runs_.at({prev, i - prev}).cluster);
      --k;
    }
    i = prev;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::string Former::reason_left_out(size_t machine, const std::vector<Cluster>& clusters, double current_total) const {
  const DeviceProfile& d = devices_.devices[machine];
  if (d.role == DeviceRole::kBackup) return "role \"backup\": kept as a standby, not in a cluster";
  // The machine's own cluster, alone.
  Evaluation alone = evaluate({machine});
  std::ostringstream out;
  out << std::fixed << std::setprecision(2);
  bool any_fit = alone.feasible;
  std::string memory_reason = alone.feasible ? "" : "alone: " + alone.why_not;
  double best_total = kNegInf;
  size_t best_cluster = 0;
  for (size_t c = 0; c < clusters.size(); ++c) {
    std::vector<size_t> members = clusters[c].machines;
    members.push_back(machine);
    Evaluation ev = evaluate(members);
    if (!ev.feasible) {
      if (memory_reason.empty()) memory_reason = "in cluster " + std::to_string(c) + ": " + ev.why_not;
      continue;
    }
    any_fit = true;
    std::vector<Cluster> with = clusters;
    with[c] = ev.cluster;
    double t = total(with, averaging(with).first);
    if (t > best_total) {
      best_total = t;
      best_cluster = c;
    }
  }
  if (!any_fit) return "memory: it cannot hold its share of the model in any cluster (" + memory_reason + ")";
  if (opt_.stages_per_cluster > 0 || opt_.clusters > 0) {
    if (best_total == kNegInf) return "the fixed cluster count or size leaves no room for it";
  }
  if (best_total == kNegInf) {
    out << "too slow: a cluster of its own would lower the total throughput (" << current_total << " samples/s)";
    return out.str();
  }
  out << "too slow: adding it to cluster " << best_cluster << " would lower the total from " << current_total
      << " to " << best_total << " samples/s";
  if (opt_.stages_per_cluster > 0) out << " (and break the fixed " << opt_.stages_per_cluster << " stages per cluster)";
  return out.str();
}

std::string Former::explain(const ClusterPlan& plan) const {
  std::ostringstream out;
  out << std::setprecision(4);
  out << "cluster formation: " << devices_.devices.size() << " machine(s), " << plan.clusters.size()
      << " cluster(s), predicted " << plan.total_samples_per_s << " samples/s in total\n";
  out << "  machines ordered by speed (seconds per micro-batch of the whole model): ";
  for (size_t i = 0; i < order_.size(); ++i) out << (i ? ", " : "") << id(order_[i]) << " " << seconds(order_[i]);
  out << "\n";
  for (size_t c = 0; c < plan.clusters.size(); ++c) {
    const Cluster& cl = plan.clusters[c];
    out << "  cluster " << c << ": ";
    for (size_t i = 0; i < cl.machines.size(); ++i) out << (i ? " -> " : "") << id(cl.machines[i]);
    out << " (" << cl.machines.size() << " stage(s)); bottleneck " << cl.bottleneck_s << " s/micro-batch, step "
        << cl.step_s << " s, " << cl.samples_per_s << " samples/s\n";
  }
  if (plan.clusters.size() > 1)
    out << "  averaging every " << opt_.average_every << " steps: " << plan.averaging_s << " s, set by the slowest "
        << "inter-cluster link (" << plan.slowest_inter_link.bandwidth_bps / 1e6 << " Mbit/s, "
        << plan.slowest_inter_link.latency_s * 1e3 << " ms, " << plan.slowest_inter_link.source << ")\n";
  for (const LeftOut& l : plan.left_out) out << "  left out: " << id(l.machine) << ": " << l.reason << "\n";
  return out.str();
}

Result<ClusterPlan> Former::run() {
  if (opt_.average_every < 1)
    return error(Code::kInvalidArgument, "cluster formation: average_every must be >= 1 step, not ", opt_.average_every);
  if (opt_.memory.microbatches < 1 || opt_.samples_per_microbatch <= 0)
    return error(Code::kInvalidArgument, "cluster formation: micro-batches and samples per micro-batch must be positive");
  if (opt_.clusters < 0 || opt_.stages_per_cluster < 0 || opt_.max_stages < 1)
    return error(Code::kInvalidArgument, "cluster formation: cluster and stage counts must be positive");
  for (const DeviceProfile& d : devices_.devices) seconds_.push_back(model_seconds(model_, d, opt_.cost));
  for (size_t i = 0; i < devices_.devices.size(); ++i)
    if (devices_.devices[i].role == DeviceRole::kWorker) order_.push_back(i);
  if (order_.empty()) return error(Code::kInvalidArgument, "cluster formation: no device has role \"worker\"");
  std::stable_sort(order_.begin(), order_.end(), [&](size_t a, size_t b) {
    return seconds(a) != seconds(b) ? seconds(a) < seconds(b) : id(a) < id(b);
  });

  const int n = static_cast<int>(order_.size());
  int lo = 1, hi = n;
  if (opt_.clusters > 0) lo = hi = opt_.clusters;
  if (opt_.stages_per_cluster > 0) hi = std::min(hi, n / opt_.stages_per_cluster);
  ClusterPlan plan;
  plan.total_samples_per_s = kNegInf;
  for (int count = lo; count <= hi; ++count) {
    std::vector<Cluster> clusters = best_with(count);
    if (clusters.empty()) continue;
    auto [avg, link] = averaging(clusters);
    double t = total(clusters, avg);
    if (t > plan.total_samples_per_s * (1 + 1e-9)) {
      plan.clusters = std::move(clusters);
      plan.averaging_s = avg;
      plan.slowest_inter_link = link;
      plan.total_samples_per_s = t;
    }
  }
  if (plan.clusters.empty()) {
    std::ostringstream why;
    why << "cluster formation: no grouping of the " << n << " worker(s) can hold the model";
    if (opt_.clusters > 0) why << " in " << opt_.clusters << " cluster(s)";
    if (opt_.stages_per_cluster > 0) why << " with " << opt_.stages_per_cluster << " stage(s) per cluster";
    Evaluation all = evaluate(std::vector<size_t>(order_.begin(), order_.begin() + std::min(n, opt_.max_stages)));
    if (!all.feasible) why << "; even the " << all.cluster.machines.size() << " fastest together fall short: " << all.why_not;
    why << " add machines with more memory, use fewer micro-batches or a smaller model";
    return error(Code::kResourceExhausted, why.str());
  }
  std::vector<bool> used(devices_.devices.size(), false);
  for (const Cluster& cl : plan.clusters)
    for (size_t m : cl.machines) used[m] = true;
  for (size_t i = 0; i < devices_.devices.size(); ++i)
    if (!used[i]) plan.left_out.push_back({i, reason_left_out(i, plan.clusters, plan.total_samples_per_s)});
  plan.explanation = explain(plan);
  return plan;
}

}  // namespace

Result<ClusterPlan> form_clusters(const DeviceSet& devices, const ModelTotals& model, const ClusterOptions& options) {
  return Former(devices, model, options).run();
}

}  // namespace ravnest::part
