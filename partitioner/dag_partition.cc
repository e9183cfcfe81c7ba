// Stage partitioning of a weighted DAG: chain DP, METIS + acyclic sweep + FM-style
// refinement, brute force. See dag_partition.h for the guarantees and the cost model.
#include "partitioner/dag_partition.h"

#include <metis.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <queue>
#include <random>
#include <sstream>

namespace ravnest::part {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Above this many nodes only the plain topological order and METIS's are split (each
// extra order costs a DP and a refinement).
constexpr size_t kMaxOrderSearchNodes = 20000;

std::string node_name(const WeightedDag& dag, int v) {
  if (static_cast<size_t>(v) < dag.names.size() && !dag.names[static_cast<size_t>(v)].empty())
    return str_cat("node ", v, " '", dag.names[static_cast<size_t>(v)], "'");
  return str_cat("node ", v);
}

std::string machine_name(const Pipeline& pipeline, size_t s) {
  const std::string& id = pipeline.machines[s].id;
  return id.empty() ? str_cat("machine ", s, " (stage ", s, ")") : str_cat("machine '", id, "' (stage ", s, ")");
}

double capacity(const Machine& m) { return m.memory_bytes > 0 ? m.memory_bytes : kInf; }
double activation_of(const WeightedDag& dag, size_t v) { return v < dag.activation.size() ? dag.activation[v] : 0.0; }
double link_bw(const Pipeline& p, size_t l) { return p.link_bandwidth.empty() ? kInf : p.link_bandwidth[l]; }

std::string human_bytes(double b) {
  std::ostringstream out;
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (std::fabs(b) >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  out.precision(u == 0 ? 0 : 2);
  out << std::fixed << b << " " << units[u];
  return out.str();
}

Status validate(const WeightedDag& dag, const Pipeline& pipeline) {
  const size_t n = dag.size(), k = pipeline.machines.size();
  if (k == 0) return error(Code::kInvalidArgument, "a pipeline needs at least one machine");
  if (n < k)
    return error(Code::kInvalidArgument, "cannot split ", n, " nodes into ", k, " stages; use at most ", n, " stages");
  if (dag.memory.size() != n) return error(Code::kInvalidArgument, "memory weights: ", dag.memory.size(), " for ", n, " nodes");
  if (!dag.activation.empty() && dag.activation.size() != n)
    return error(Code::kInvalidArgument, "activation weights: ", dag.activation.size(), " for ", n, " nodes");
  for (size_t v = 0; v < n; ++v)
    if (!(dag.compute[v] >= 0) || !(dag.memory[v] >= 0) || !(activation_of(dag, v) >= 0))
      return error(Code::kInvalidArgument, node_name(dag, static_cast<int>(v)), " has a negative or NaN weight");
  for (size_t s = 0; s < k; ++s) {
    const Machine& m = pipeline.machines[s];
    if (!(m.speed > 0) || !std::isfinite(m.speed))
      return error(Code::kInvalidArgument, machine_name(pipeline, s), " needs a positive speed, not ", m.speed);
    if (!(m.in_flight >= 0)) return error(Code::kInvalidArgument, machine_name(pipeline, s), " has a negative in_flight");
  }
  if (!pipeline.link_bandwidth.empty()) {
    if (pipeline.link_bandwidth.size() != k - 1)
      return error(Code::kInvalidArgument, "link bandwidths: ", pipeline.link_bandwidth.size(), " given, ", k - 1,
                   " needed (one per pair of consecutive stages)");
    for (size_t l = 0; l + 1 < k; ++l)
      if (!(pipeline.link_bandwidth[l] > 0))
        return error(Code::kInvalidArgument, "link ", l, "->", l + 1, " needs a positive bandwidth");
  }
  for (size_t t = 0; t < dag.tensors.size(); ++t) {
    const DagTensor& x = dag.tensors[t];
    if (x.producer < 0 || static_cast<size_t>(x.producer) >= n)
      return error(Code::kInvalidArgument, "tensor ", t, " has producer ", x.producer, " outside [0, ", n, ")");
    if (!(x.bytes >= 0)) return error(Code::kInvalidArgument, "tensor ", t, " has negative bytes");
    for (int c : x.consumers)
      if (c < 0 || static_cast<size_t>(c) >= n || c == x.producer)
        return error(Code::kInvalidArgument, "tensor ", t, " of ", node_name(dag, x.producer), " has consumer ", c,
                     " that is not another node");
  }
  return ok_status();
}

// Adjacency derived from the tensors.
struct Adjacency {
  std::vector<std::vector<int>> out_tensors, in_tensors;  // per node
  std::vector<std::vector<int>> succ, pred;               // per node, deduplicated
};

Adjacency build_adjacency(const WeightedDag& dag) {
  Adjacency a;
  const size_t n = dag.size();
  a.out_tensors.resize(n);
  a.in_tensors.resize(n);
  a.succ.resize(n);
  a.pred.resize(n);
  for (size_t t = 0; t < dag.tensors.size(); ++t) {
    const DagTensor& x = dag.tensors[t];
    a.out_tensors[static_cast<size_t>(x.producer)].push_back(static_cast<int>(t));
    for (int c : x.consumers) {
      a.in_tensors[static_cast<size_t>(c)].push_back(static_cast<int>(t));
      a.succ[static_cast<size_t>(x.producer)].push_back(c);
      a.pred[static_cast<size_t>(c)].push_back(x.producer);
    }
  }
  for (auto* lists : {&a.succ, &a.pred, &a.in_tensors})
    for (auto& l : *lists) {
      std::sort(l.begin(), l.end());
      l.erase(std::unique(l.begin(), l.end()), l.end());
    }
  return a;
}

// Kahn's algorithm; `priority[v]` (smaller first) breaks ties, then the node index.
Result<std::vector<int>> kahn_order(const WeightedDag& dag, const Adjacency& adj, const std::vector<double>& priority) {
  const size_t n = dag.size();
  std::vector<int> indegree(n, 0);
  for (size_t v = 0; v < n; ++v) indegree[v] = static_cast<int>(adj.pred[v].size());
  using Item = std::pair<double, int>;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> ready;
  auto key = [&](int v) { return priority.empty() ? 0.0 : priority[static_cast<size_t>(v)]; };
  for (size_t v = 0; v < n; ++v)
    if (indegree[v] == 0) ready.push({key(static_cast<int>(v)), static_cast<int>(v)});
  std::vector<int> order;
  order.reserve(n);
  while (!ready.empty()) {
    int v = ready.top().second;
    ready.pop();
    order.push_back(v);
    for (int w : adj.succ[static_cast<size_t>(v)])
      if (--indegree[static_cast<size_t>(w)] == 0) ready.push({key(w), w});
  }
  if (order.size() != n) {
    for (size_t v = 0; v < n; ++v)
      if (indegree[v] > 0)
        return error(Code::kInvalidArgument, "the graph has a cycle through ", node_name(dag, static_cast<int>(v)),
                     "; a pipeline needs an acyclic graph");
  }
  return order;
}

// Everything the cost model needs, for one assignment; updated incrementally by refine().
struct Costs {
  std::vector<double> compute, fixed, act, link;  // per stage (link: K-1)
  std::vector<int> count;
};

Costs compute_costs(const WeightedDag& dag, const Pipeline& pipeline, const std::vector<int>& stage) {
  const size_t k = pipeline.machines.size();
  Costs c;
  c.compute.assign(k, 0);
  c.fixed.assign(k, 0);
  c.act.assign(k, 0);
  c.link.assign(k > 0 ? k - 1 : 0, 0);
  c.count.assign(k, 0);
  for (size_t v = 0; v < dag.size(); ++v) {
    size_t s = static_cast<size_t>(stage[v]);
    c.compute[s] += dag.compute[v];
    c.fixed[s] += dag.memory[v];
    c.act[s] += activation_of(dag, v);
    c.count[s] += 1;
  }
  for (const DagTensor& x : dag.tensors) {
    int p = stage[static_cast<size_t>(x.producer)], m = p;
    for (int cons : x.consumers) m = std::max(m, stage[static_cast<size_t>(cons)]);
    for (int l = p; l < m; ++l) c.link[static_cast<size_t>(l)] += x.bytes;
  }
  return c;
}

double stage_memory(const Costs& c, const Pipeline& pipeline, size_t s) {
  return c.fixed[s] + c.act[s] * pipeline.machines[s].in_flight;
}

double stage_transfer(const Costs& c, const Pipeline& pipeline, size_t s) {
  const size_t k = pipeline.machines.size();
  double t = 0;
  if (s > 0 && c.link[s - 1] > 0) t += c.link[s - 1] / link_bw(pipeline, s - 1);
  if (s + 1 < k && c.link[s] > 0) t += c.link[s] / link_bw(pipeline, s);
  return t;
}

double stage_time(const Costs& c, const Pipeline& pipeline, size_t s) {
  return c.compute[s] / pipeline.machines[s].speed + stage_transfer(c, pipeline, s);
}

// Lexicographic objective of the refinement: memory overflow first, then the
// bottleneck, then the sum of squared stage times (which spreads slack and lets later
// moves lower the bottleneck).
struct Objective {
  double overflow = 0, bottleneck = 0, sumsq = 0;
  bool better_than(const Objective& o) const {
    auto less = [](double a, double b) { return a < b - 1e-12 * std::max(1.0, std::fabs(b)); };
    if (less(overflow, o.overflow)) return true;
    if (less(o.overflow, overflow)) return false;
    if (less(bottleneck, o.bottleneck)) return true;
    if (less(o.bottleneck, bottleneck)) return false;
    return less(sumsq, o.sumsq);
  }
};

Objective objective(const Costs& c, const Pipeline& pipeline) {
  Objective o;
  for (size_t s = 0; s < pipeline.machines.size(); ++s) {
    double t = stage_time(c, pipeline, s);
    o.bottleneck = std::max(o.bottleneck, t);
    o.sumsq += t * t;
    o.overflow += std::max(0.0, stage_memory(c, pipeline, s) - capacity(pipeline.machines[s]));
  }
  return o;
}

DagPartition make_result(const WeightedDag& dag, const Pipeline& pipeline, std::vector<int> stage, std::string method) {
  const size_t k = pipeline.machines.size();
  Costs c = compute_costs(dag, pipeline, stage);
  DagPartition out;
  out.stage_of_node = std::move(stage);
  out.method = std::move(method);
  out.link_bytes = c.link;
  for (size_t s = 0; s < k; ++s) {
    out.stage_compute.push_back(c.compute[s] / pipeline.machines[s].speed);
    out.stage_transfer.push_back(stage_transfer(c, pipeline, s));
    out.stage_time.push_back(out.stage_compute.back() + out.stage_transfer.back());
    out.stage_memory.push_back(stage_memory(c, pipeline, s));
    out.bottleneck = std::max(out.bottleneck, out.stage_time.back());
  }
  return out;
}

// The memory error: which machines lack how much under `best` (the split we would
// have used), and what would fit.
Status memory_error(const WeightedDag& dag, const Pipeline& pipeline, const std::vector<int>& best) {
  const size_t k = pipeline.machines.size();
  Costs c = compute_costs(dag, pipeline, best);
  std::ostringstream msg;
  msg << "the model does not fit the memory of the " << k << " machines:";
  double need = 0, have = 0;
  bool unlimited = false;
  for (size_t s = 0; s < k; ++s) {
    const Machine& m = pipeline.machines[s];
    double mem = stage_memory(c, pipeline, s), cap = capacity(m);
    need += mem;
    if (std::isinf(cap)) unlimited = true; else have += cap;
    if (mem <= cap) continue;
    msg << " " << machine_name(pipeline, s) << " needs " << human_bytes(mem) << " but has " << human_bytes(cap)
        << " (lacks " << human_bytes(mem - cap) << ")";
    if (c.act[s] > 0 && c.fixed[s] < cap) {
      double fit = std::floor((cap - c.fixed[s]) / c.act[s]);
      if (fit >= 1 && fit < m.in_flight)
        msg << "; it would fit with at most " << fit << " micro-batches in flight instead of " << m.in_flight
            << " (fewer micro-batches, or a schedule that keeps fewer in flight)";
      else if (fit < 1)
        msg << "; even one micro-batch in flight does not fit: use smaller micro-batches or more stages";
    } else {
      msg << "; its parameters and optimizer state alone exceed it: use more stages";
    }
    msg << ";";
  }
  if (!unlimited && need > have)
    msg << " in all the split needs " << human_bytes(need) << " and the machines hold " << human_bytes(have)
        << ": add machines with at least " << human_bytes(need - have) << " more memory (more stages)";
  else
    msg << " the machines hold enough in total but no pipeline split fits each one: use more stages or machines "
           "with more memory at the crowded stages";
  return Status(Code::kResourceExhausted, msg.str());
}

// ---- chain DP ----

// Prefix sums of one topological order: what every pipeline's DP over that order shares
// (choose_machine_order scores many machine arrangements on the same order).
struct ChainPrefix {
  std::vector<int> order;
  std::vector<double> work, fixed, act;  // n + 1 entries: sums over positions [0, i)
  std::vector<double> cross;             // cross[i]: bytes of tensors live across the cut before position i
};

ChainPrefix chain_prefix(const WeightedDag& dag, const std::vector<int>& order) {
  const size_t n = order.size();
  ChainPrefix c;
  c.order = order;
  c.work.assign(n + 1, 0);
  c.fixed.assign(n + 1, 0);
  c.act.assign(n + 1, 0);
  c.cross.assign(n + 1, 0);
  std::vector<size_t> pos(n);
  for (size_t i = 0; i < n; ++i) pos[static_cast<size_t>(order[i])] = i;
  for (size_t i = 0; i < n; ++i) {
    size_t v = static_cast<size_t>(order[i]);
    c.work[i + 1] = c.work[i] + dag.compute[v];
    c.fixed[i + 1] = c.fixed[i] + dag.memory[v];
    c.act[i + 1] = c.act[i] + activation_of(dag, v);
  }
  std::vector<double> diff(n + 2, 0);
  for (const DagTensor& x : dag.tensors) {
    size_t p = pos[static_cast<size_t>(x.producer)], m = p;
    for (int cons : x.consumers) m = std::max(m, pos[static_cast<size_t>(cons)]);
    if (m > p) {
      diff[p + 1] += x.bytes;
      diff[m + 1] -= x.bytes;
    }
  }
  double run = 0;
  for (size_t i = 0; i <= n; ++i) c.cross[i] = (run += diff[i]);
  return c;
}

// Exact contiguous split of the order at bottleneck threshold `limit` (kInf: memory only).
// Stage s spans positions [a, b): cost = (W[b]-W[a])/speed + cross[a]/bw_in + cross[b]/bw_out
// <= limit <=> g(a) := W[a]/speed - cross[a]/bw_in >= W[b]/speed + cross[b]/bw_out - limit,
// so for each end b the start with the largest g among the reachable, memory-feasible
// starts is taken (ties: the latest such start), found with a monotone window. Everything
// that does not depend on `limit` (g, the transfer times, the memory window's lower end)
// is computed once per pipeline; solve() reuses its buffers across probes.
class ChainDp {
 public:
  ChainDp(const ChainPrefix& prefix, const Pipeline& pipeline) : p_(&prefix), n_(prefix.order.size()),
      k_(pipeline.machines.size()) {
    speed_.resize(k_);
    later_speed_.assign(k_, 0);
    for (size_t s = k_ - 1; s-- > 0;) later_speed_[s] = later_speed_[s + 1] + pipeline.machines[s + 1].speed;
    g_.assign(k_ * (n_ + 1), 0);
    tin_.assign(k_ * (n_ + 1), 0);
    tout_.assign(k_ * (n_ + 1), 0);
    lo_.assign(k_ * (n_ + 1), 0);
    auto transfer = [](double bytes, double bw) { return bytes > 0 ? bytes / bw : 0.0; };
    for (size_t s = 0; s < k_; ++s) {
      const Machine& m = pipeline.machines[s];
      speed_[s] = m.speed;
      const double cap = capacity(m);
      const double bw_in = s > 0 ? link_bw(pipeline, s - 1) : kInf, bw_out = s + 1 < k_ ? link_bw(pipeline, s) : kInf;
      double* g = &g_[s * (n_ + 1)];
      double* tin = &tin_[s * (n_ + 1)];
      double* tout = &tout_[s * (n_ + 1)];
      size_t* lo_of = &lo_[s * (n_ + 1)];
      for (size_t i = 0; i <= n_; ++i) {
        tin[i] = transfer(prefix.cross[i], bw_in);
        tout[i] = transfer(prefix.cross[i], bw_out);
        g[i] = prefix.work[i] / m.speed - tin[i];
      }
      // Memory: fixed[b]-fixed[a] + (act[b]-act[a]) * in_flight <= cap, monotone in a.
      size_t lo = 0;
      const size_t last_b = n_ - (k_ - 1 - s);
      for (size_t b = s + 1; b <= last_b; ++b) {
        while (lo < b && prefix.fixed[b] - prefix.fixed[lo] + (prefix.act[b] - prefix.act[lo]) * m.in_flight >
                             cap * (1 + 1e-12))
          ++lo;
        lo_of[b] = lo;
      }
    }
    // slack_: a bound on the rounding of a cost or g value (a few operations on values up to
    // W[n] / slowest speed + the largest transfer times), 16x generous.
    double slowest = kInf, largest_transfer = 0;
    for (double sp : speed_) slowest = std::min(slowest, sp);
    for (size_t i = 0; i < tin_.size(); ++i) largest_transfer = std::max(largest_transfer, tin_[i] + tout_[i]);
    slack_ = 64 * std::numeric_limits<double>::epsilon() * (prefix.work[n_] / slowest + largest_transfer);
    if (!std::isfinite(slack_)) slack_ = kInf;
    reach_.assign((k_ + 1) * (n_ + 1), 0);
    from_.assign((k_ + 1) * (n_ + 1), -1);
    window_.resize(n_ + 1);
  }

  // The stage of each node, or an empty vector when no split meets the limit.
  std::vector<int> solve(double limit) {
    std::vector<int> stage;
    if (feasible(limit)) stage = split();
    return stage;
  }

  // Whether a split meets the limit; leaves the split in from_ for split().
  bool feasible(double limit) {
    const size_t row = n_ + 1;
    std::fill(reach_.begin(), reach_.begin() + static_cast<std::ptrdiff_t>(row), 0);
    reach_[0] = 1;
    const double bound = limit * (1 + 1e-12);
    size_t first = 0, last = 0;  // the reachable starts of stage s lie in [first, last]
    for (size_t s = 0; s < k_; ++s) {
      const char* reach = &reach_[s * row];
      char* reach_next = &reach_[(s + 1) * row];
      int* from_next = &from_[(s + 1) * row];
      std::fill(reach_next, reach_next + row, 0);
      const double* g = &g_[s * row];
      const double* tin = &tin_[s * row];
      const double* tout = &tout_[s * row];
      const size_t* lo_of = &lo_[s * row];
      const double* work = p_->work.data();
      const double speed = speed_[s];
      size_t head = 0, tail = 0;  // window_[head, tail): reachable starts, g decreasing
      size_t next = first;
      bool any = false;
      size_t next_first = 0, next_last = 0;
      const size_t last_b = n_ - (k_ - 1 - s);
      // Ends up to `first` have no start; past the last start, an end whose compute from
      // that start alone exceeds the bound fails, and so does every later end (prefix
      // sums only grow and every other term is >= 0). Ends that leave more compute than
      // the later stages can do even within bound + slack_, W[n] - W[b] > (bound + slack_)
      // x their summed speed (1e-9 over for the rounding of that test), are skipped: no
      // split continues from them. Skipping them changes no end that can complete: its
      // window's best start either met the bound (then it can complete: not skipped) or
      // missed it by more than slack_ (else it could complete within bound + slack_), so
      // any other start, whose g is no larger, misses it too.
      size_t b_begin = std::max(s + 1, first + 1);
      if (s + 1 < k_) {
        const double rest = (bound + slack_) * later_speed_[s] * (1 + 1e-9);
        auto too_early = [&](size_t b) { return work[n_] - work[b] > rest; };
        size_t lo = b_begin, hi = last_b + 1;  // first end in [lo, hi) that is not too early
        while (lo < hi) {
          const size_t mid = lo + (hi - lo) / 2;
          if (too_early(mid)) lo = mid + 1; else hi = mid;
        }
        b_begin = lo;
      }
      for (size_t b = b_begin; b <= last_b; ++b) {
        if (b > last && (work[b] - work[last]) / speed > bound) break;
        for (; next < b; ++next) {
          if (!reach[next]) continue;
          while (tail > head && g[window_[tail - 1]] <= g[next]) --tail;
          window_[tail++] = next;
        }
        const size_t lo = lo_of[b];
        while (tail > head && window_[head] < lo) ++head;
        if (tail == head) continue;
        if (s + 1 == k_ && b != n_) continue;
        const size_t a = window_[head];
        const double cost = (work[b] - work[a]) / speed + tin[a] + tout[b];
        if (cost <= bound) {
          reach_next[b] = 1;
          from_next[b] = static_cast<int>(a);
          if (!any) next_first = b;
          next_last = b;
          any = true;
        }
      }
      if (!any) return false;
      first = next_first;
      last = next_last;
    }
    return reach_[k_ * row + n_] != 0;
  }

 private:
  std::vector<int> split() const {
    const size_t row = n_ + 1;
    std::vector<int> stage(n_, 0);
    size_t end = n_;
    for (size_t s = k_; s >= 1; --s) {
      size_t begin = static_cast<size_t>(from_[s * row + end]);
      for (size_t i = begin; i < end; ++i) stage[static_cast<size_t>(p_->order[i])] = static_cast<int>(s - 1);
      end = begin;
    }
    return stage;
  }

  const ChainPrefix* p_;
  size_t n_, k_;
  std::vector<double> speed_;
  std::vector<double> later_speed_;     // per stage: the summed speed of the stages after it
  double slack_ = kInf;                 // rounding bound of one cost (kInf: no skipping)
  std::vector<double> g_, tin_, tout_;  // per stage, per position
  std::vector<size_t> lo_;              // per stage, per end: the first memory-feasible start
  std::vector<char> reach_;             // per stage boundary, per position: nodes [0, b) fit on stages [0, s)
  std::vector<int> from_;               // where the stage ending there began
  std::vector<size_t> window_;
};

// Bisection on the bottleneck; when memory alone rules out every split, the memory
// error for the best split that ignores memory.
Result<std::vector<int>> chain_dp_bisect(const WeightedDag& dag, const Pipeline& pipeline, const ChainPrefix& prefix,
                                         ChainDp& dp) {
  std::vector<int> best = dp.solve(kInf);
  if (best.empty()) {
    Pipeline unlimited = pipeline;
    for (Machine& m : unlimited.machines) m.memory_bytes = 0;
    ChainDp loose_dp(prefix, unlimited);
    std::vector<int> loose = loose_dp.solve(kInf);
    double lo = 0, hi = make_result(dag, pipeline, loose, "").bottleneck;
    for (int it = 0; it < 200 && hi - lo > 1e-12 * hi; ++it) {
      double mid = 0.5 * (lo + hi);
      std::vector<int> s = loose_dp.solve(mid);
      if (s.empty()) lo = mid; else { hi = mid; loose = std::move(s); }
    }
    return memory_error(dag, pipeline, loose);
  }
  double lo = 0, hi = make_result(dag, pipeline, best, "").bottleneck;
  double best_limit = kInf;
  for (int it = 0; it < 200 && hi - lo > 1e-13 * hi; ++it) {
    double mid = 0.5 * (lo + hi);
    if (dp.feasible(mid)) {
      hi = mid;
      best_limit = mid;
    } else {
      lo = mid;
    }
  }
  if (best_limit < kInf) best = dp.solve(best_limit);
  return best;
}

Result<std::vector<int>> chain_dp(const WeightedDag& dag, const Pipeline& pipeline, const std::vector<int>& order) {
  const ChainPrefix prefix = chain_prefix(dag, order);
  ChainDp dp(prefix, pipeline);
  return chain_dp_bisect(dag, pipeline, prefix, dp);
}

// A bound on how far the DP's stage cost of a split (prefix differences, running sums of
// crossing bytes) and the argmax-g start choice can stray from the stage time that
// make_result() computes for the same split (per-stage and per-link sums): every sum
// here has at most n + tensors + k + 16 rounded terms, each off by at most one ulp of
// the largest magnitude, W_total / slowest speed + 2 B_total / slowest link. Generous by
// a factor of 16. kInf when a weight is infinite (then nothing is pruned).
double rounding_margin(const WeightedDag& dag, const Pipeline& pipeline) {
  double work = 0, bytes = 0, slowest = kInf, narrowest = kInf;
  for (double w : dag.compute) work += w;
  for (const DagTensor& x : dag.tensors) bytes += x.bytes;
  for (const Machine& m : pipeline.machines) slowest = std::min(slowest, m.speed);
  for (double bw : pipeline.link_bandwidth) narrowest = std::min(narrowest, bw);
  const double scale = work / slowest + (bytes > 0 ? 2 * bytes / narrowest : 0.0);
  if (!std::isfinite(scale)) return kInf;
  const double terms = static_cast<double>(dag.size() + dag.tensors.size() + pipeline.machines.size() + 16);
  return 16 * terms * std::numeric_limits<double>::epsilon() * scale;
}

// ---- refinement ----

// FM-style local search: moves a node to another stage between its latest predecessor's
// and its earliest successor's (so acyclicity holds) when its stage keeps a node and the
// objective improves; bounded passes.
std::vector<int> refine(const WeightedDag& dag, const Pipeline& pipeline, const Adjacency& adj,
                        const std::vector<int>& topo, std::vector<int> stage, int passes) {
  const int k = static_cast<int>(pipeline.machines.size());
  if (k < 2) return stage;
  Costs c = compute_costs(dag, pipeline, stage);
  Objective current = objective(c, pipeline);
  auto max_consumer = [&](const DagTensor& x) {
    int m = stage[static_cast<size_t>(x.producer)];
    for (int cons : x.consumers) m = std::max(m, stage[static_cast<size_t>(cons)]);
    return m;
  };
  auto add_span = [&](Costs& cc, int p, int m, double bytes) {
    for (int l = p; l < m; ++l) cc.link[static_cast<size_t>(l)] += bytes;
  };
  for (int pass = 0; pass < passes; ++pass) {
    bool improved = false;
    for (int v : topo) {
      const size_t vi = static_cast<size_t>(v);
      // Legal stages keep every edge forward: [latest predecessor, earliest successor].
      int lo = 0, hi = k - 1;
      for (int w : adj.pred[vi]) lo = std::max(lo, stage[static_cast<size_t>(w)]);
      for (int w : adj.succ[vi]) hi = std::min(hi, stage[static_cast<size_t>(w)]);
      for (int t = lo; t <= hi; ++t) {
        const int s = stage[vi];
        if (t == s || c.count[static_cast<size_t>(s)] <= 1) continue;
        Costs next = c;
        // Tensors touching v change their spans: remove old, move v, add new.
        for (int ti : adj.out_tensors[vi]) {
          const DagTensor& x = dag.tensors[static_cast<size_t>(ti)];
          add_span(next, s, max_consumer(x), -x.bytes);
        }
        for (int ti : adj.in_tensors[vi]) {
          const DagTensor& x = dag.tensors[static_cast<size_t>(ti)];
          add_span(next, stage[static_cast<size_t>(x.producer)], max_consumer(x), -x.bytes);
        }
        stage[vi] = t;
        for (int ti : adj.out_tensors[vi]) {
          const DagTensor& x = dag.tensors[static_cast<size_t>(ti)];
          add_span(next, t, max_consumer(x), x.bytes);
        }
        for (int ti : adj.in_tensors[vi]) {
          const DagTensor& x = dag.tensors[static_cast<size_t>(ti)];
          add_span(next, stage[static_cast<size_t>(x.producer)], max_consumer(x), x.bytes);
        }
        const size_t ss = static_cast<size_t>(s), ts = static_cast<size_t>(t);
        next.compute[ss] -= dag.compute[vi];
        next.compute[ts] += dag.compute[vi];
        next.fixed[ss] -= dag.memory[vi];
        next.fixed[ts] += dag.memory[vi];
        next.act[ss] -= activation_of(dag, vi);
        next.act[ts] += activation_of(dag, vi);
        next.count[ss] -= 1;
        next.count[ts] += 1;
        Objective o = objective(next, pipeline);
        if (o.better_than(current)) {
          c = std::move(next);
          current = o;
          improved = true;
          break;
        }
        stage[vi] = s;
      }
    }
    if (!improved) break;
  }
  return stage;
}

// ---- METIS ----

// METIS k-way on the undirected graph: vertex weights compute (and memory when a
// machine's memory is limited), edge weights tensor bytes, target part weights
// proportional to speed (and memory capacity). Returns the part of each node, or an
// error saying why METIS could not be used.
Result<std::vector<int>> metis_parts(const WeightedDag& dag, const Pipeline& pipeline, const Adjacency& adj, int seed) {
  const size_t n = dag.size(), k = pipeline.machines.size();
  if (k < 2) return error(Code::kUnsupported, "one stage");
  if (n < 2 * k) return error(Code::kUnsupported, "too few nodes (", n, ") for ", k, " parts");
  // Undirected weighted adjacency: merge parallel edges.
  std::vector<std::vector<std::pair<int, double>>> nbr(n);
  double max_bytes = 0;
  for (const DagTensor& x : dag.tensors) max_bytes = std::max(max_bytes, x.bytes);
  for (const DagTensor& x : dag.tensors)
    for (int c : x.consumers) {
      nbr[static_cast<size_t>(x.producer)].push_back({c, x.bytes});
      nbr[static_cast<size_t>(c)].push_back({x.producer, x.bytes});
    }
  std::vector<idx_t> xadj(n + 1, 0), adjncy, adjwgt;
  for (size_t v = 0; v < n; ++v) {
    auto& l = nbr[v];
    std::sort(l.begin(), l.end());
    for (size_t i = 0; i < l.size();) {
      size_t j = i;
      double bytes = 0;
      while (j < l.size() && l[j].first == l[i].first) bytes += l[j++].second;
      adjncy.push_back(static_cast<idx_t>(l[i].first));
      adjwgt.push_back(static_cast<idx_t>(1 + std::lround(max_bytes > 0 ? std::min(1.0, bytes / max_bytes) * 999 : 0)));
      i = j;
    }
    xadj[v + 1] = static_cast<idx_t>(adjncy.size());
  }
  bool memory_limited = false;
  double total_mem = 0;
  for (size_t v = 0; v < n; ++v) total_mem += dag.memory[v] + activation_of(dag, v);
  for (const Machine& m : pipeline.machines) memory_limited = memory_limited || m.memory_bytes > 0;
  memory_limited = memory_limited && total_mem > 0;
  const idx_t ncon = memory_limited ? 2 : 1;
  // Integer vertex weights; the scale keeps the sums far below 2^31.
  const double scale = std::min(1000.0, 1e9 / static_cast<double>(n));
  double max_compute = *std::max_element(dag.compute.begin(), dag.compute.end()), max_mem = 0;
  std::vector<double> mem(n);
  for (size_t v = 0; v < n; ++v) max_mem = std::max(max_mem, mem[v] = dag.memory[v] + activation_of(dag, v));
  std::vector<idx_t> vwgt;
  for (size_t v = 0; v < n; ++v) {
    vwgt.push_back(static_cast<idx_t>(1 + std::lround(max_compute > 0 ? dag.compute[v] / max_compute * scale : 0)));
    if (ncon == 2) vwgt.push_back(static_cast<idx_t>(1 + std::lround(max_mem > 0 ? mem[v] / max_mem * scale : 0)));
  }
  std::vector<real_t> tpwgts;
  double speed_sum = 0, cap_sum = 0;
  for (const Machine& m : pipeline.machines) speed_sum += m.speed;
  for (const Machine& m : pipeline.machines) cap_sum += m.memory_bytes > 0 ? m.memory_bytes : total_mem;
  for (const Machine& m : pipeline.machines) {
    tpwgts.push_back(static_cast<real_t>(m.speed / speed_sum));
    if (ncon == 2) tpwgts.push_back(static_cast<real_t>((m.memory_bytes > 0 ? m.memory_bytes : total_mem) / cap_sum));
  }
  std::vector<real_t> ubvec = {1.05f, 1.3f};
  idx_t options[METIS_NOPTIONS];
  METIS_SetDefaultOptions(options);
  options[METIS_OPTION_SEED] = seed;
  options[METIS_OPTION_NUMBERING] = 0;
  idx_t nv = static_cast<idx_t>(n), nparts = static_cast<idx_t>(k), objval = 0, nc = ncon;
  std::vector<idx_t> part(n, 0);
  int rc = METIS_PartGraphKway(&nv, &nc, xadj.data(), adjncy.empty() ? nullptr : adjncy.data(), vwgt.data(), nullptr,
                               adjwgt.empty() ? nullptr : adjwgt.data(), &nparts, tpwgts.data(), ubvec.data(), options,
                               &objval, part.data());
  if (rc != METIS_OK) return error(Code::kInternal, "METIS_PartGraphKway returned ", rc);
  return std::vector<int>(part.begin(), part.end());
}

// Ranks METIS parts along the pipeline by the median topological position of their nodes.
std::vector<int> rank_parts(const std::vector<int>& part, const std::vector<int>& topo, size_t k) {
  std::vector<std::vector<int>> positions(k);
  for (size_t i = 0; i < topo.size(); ++i) positions[static_cast<size_t>(part[static_cast<size_t>(topo[i])])].push_back(static_cast<int>(i));
  std::vector<double> median(k, kInf);
  for (size_t p = 0; p < k; ++p)
    if (!positions[p].empty()) median[p] = positions[p][positions[p].size() / 2];
  std::vector<int> by_median(k);
  std::iota(by_median.begin(), by_median.end(), 0);
  std::stable_sort(by_median.begin(), by_median.end(), [&](int a, int b) { return median[static_cast<size_t>(a)] < median[static_cast<size_t>(b)]; });
  std::vector<int> rank(k);
  for (size_t r = 0; r < k; ++r) rank[static_cast<size_t>(by_median[r])] = static_cast<int>(r);
  return rank;
}

// Topological orders worth splitting exactly: depth-first (keeps each branch of a
// fan-out together), longest-path levels from the sources and to the sinks, and a few
// seeded random tie-breaks. Each is split by the chain DP and refined.
std::vector<std::vector<int>> extra_orders(const WeightedDag& dag, const Adjacency& adj, int seed) {
  const size_t n = dag.size();
  std::vector<std::vector<int>> orders;
  // Reverse post-order of a DFS from the sources.
  {
    std::vector<char> seen(n, 0);
    std::vector<int> post;
    post.reserve(n);
    for (size_t root = n; root-- > 0;) {
      if (seen[root] || !adj.pred[root].empty()) continue;
      std::vector<std::pair<int, size_t>> stack = {{static_cast<int>(root), 0}};
      seen[root] = 1;
      while (!stack.empty()) {
        auto& [v, i] = stack.back();
        const auto& succ = adj.succ[static_cast<size_t>(v)];
        if (i < succ.size()) {
          int w = succ[succ.size() - 1 - i++];
          if (!seen[static_cast<size_t>(w)]) {
            seen[static_cast<size_t>(w)] = 1;
            stack.push_back({w, 0});
          }
        } else {
          post.push_back(v);
          stack.pop_back();
        }
      }
    }
    if (post.size() == n) orders.emplace_back(post.rbegin(), post.rend());
  }
  auto by_priority = [&](const std::vector<double>& priority) {
    auto order = kahn_order(dag, adj, priority);
    if (order.ok()) orders.push_back(std::move(order).value());
  };
  // Longest path (in nodes) to a sink, largest first; and from a source, smallest first.
  std::vector<double> to_sink(n, 0), from_source(n, 0);
  auto topo = kahn_order(dag, adj, {});
  if (!topo.ok()) return orders;
  for (auto it = topo->rbegin(); it != topo->rend(); ++it)
    for (int w : adj.succ[static_cast<size_t>(*it)])
      to_sink[static_cast<size_t>(*it)] = std::max(to_sink[static_cast<size_t>(*it)], to_sink[static_cast<size_t>(w)] + 1);
  for (int v : *topo)
    for (int w : adj.succ[static_cast<size_t>(v)])
      from_source[static_cast<size_t>(w)] = std::max(from_source[static_cast<size_t>(w)], from_source[static_cast<size_t>(v)] + 1);
  for (double& x : to_sink) x = -x;
  by_priority(to_sink);
  by_priority(from_source);
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::uniform_real_distribution<double> uniform(0, 1);
  const int random_orders = n <= 1000 ? 32 : 4;
  for (int r = 0; r < random_orders; ++r) {
    std::vector<double> priority(n);
    for (double& x : priority) x = uniform(rng);
    by_priority(priority);
  }
  return orders;
}

bool all_stages_used(const std::vector<int>& stage, size_t k) {
  std::vector<char> used(k, 0);
  for (int s : stage) used[static_cast<size_t>(s)] = 1;
  return std::all_of(used.begin(), used.end(), [](char u) { return u != 0; });
}

}  // namespace

Result<std::vector<int>> topological_order(const WeightedDag& dag) {
  for (const DagTensor& x : dag.tensors)
    for (int c : x.consumers)
      if (x.producer < 0 || static_cast<size_t>(x.producer) >= dag.size() || c < 0 || static_cast<size_t>(c) >= dag.size())
        return error(Code::kInvalidArgument, "a tensor names a node outside [0, ", dag.size(), ")");
  return kahn_order(dag, build_adjacency(dag), {});
}

Result<DagPartition> evaluate_partition(const WeightedDag& dag, const Pipeline& pipeline, std::vector<int> stage_of_node,
                                        std::string method) {
  RN_RETURN_IF_ERROR(validate(dag, pipeline));
  const size_t n = dag.size(), k = pipeline.machines.size();
  if (stage_of_node.size() != n)
    return error(Code::kInvalidArgument, "the assignment covers ", stage_of_node.size(), " of ", n, " nodes");
  for (size_t v = 0; v < n; ++v)
    if (stage_of_node[v] < 0 || static_cast<size_t>(stage_of_node[v]) >= k)
      return error(Code::kInvalidArgument, node_name(dag, static_cast<int>(v)), " has stage ", stage_of_node[v],
                   " outside [0, ", k, ")");
  for (const DagTensor& x : dag.tensors)
    for (int c : x.consumers)
      if (stage_of_node[static_cast<size_t>(c)] < stage_of_node[static_cast<size_t>(x.producer)])
        return error(Code::kInvalidArgument, node_name(dag, c), " (stage ", stage_of_node[static_cast<size_t>(c)],
                     ") reads from ", node_name(dag, x.producer), " (stage ",
                     stage_of_node[static_cast<size_t>(x.producer)], "): stages must form a pipeline order");
  std::vector<int> count(k, 0);
  for (int s : stage_of_node) ++count[static_cast<size_t>(s)];
  for (size_t s = 0; s < k; ++s)
    if (count[s] == 0) return error(Code::kInvalidArgument, "stage ", s, " has no node");
  DagPartition out = make_result(dag, pipeline, std::move(stage_of_node), std::move(method));
  for (size_t s = 0; s < k; ++s)
    if (out.stage_memory[s] > capacity(pipeline.machines[s]) * (1 + 1e-12))
      return memory_error(dag, pipeline, out.stage_of_node);
  return out;
}

Result<DagPartition> partition_chain_dp(const WeightedDag& dag, const Pipeline& pipeline, const std::vector<int>& order) {
  RN_RETURN_IF_ERROR(validate(dag, pipeline));
  std::vector<int> topo = order;
  if (topo.empty()) {
    topo.resize(dag.size());
    std::iota(topo.begin(), topo.end(), 0);
  }
  if (topo.size() != dag.size()) return error(Code::kInvalidArgument, "the order lists ", topo.size(), " of ", dag.size(), " nodes");
  RN_ASSIGN_OR_RETURN(std::vector<int> stage, chain_dp(dag, pipeline, topo));
  return evaluate_partition(dag, pipeline, std::move(stage), "chain-dp");
}

Result<DagPartition> partition_dag(const WeightedDag& dag, const Pipeline& pipeline, const PartitionOptions& options) {
  RN_RETURN_IF_ERROR(validate(dag, pipeline));
  const size_t k = pipeline.machines.size();
  const Adjacency adj = build_adjacency(dag);
  RN_ASSIGN_OR_RETURN(std::vector<int> topo, kahn_order(dag, adj, {}));

  // Candidate 1: exact split of the plain topological order (the reference and fallback).
  RN_ASSIGN_OR_RETURN(std::vector<int> dp_stage, chain_dp(dag, pipeline, topo));
  RN_ASSIGN_OR_RETURN(DagPartition best, evaluate_partition(dag, pipeline, dp_stage, "chain-dp"));
  std::vector<double> topo_pos(dag.size());
  for (size_t i = 0; i < topo.size(); ++i) topo_pos[static_cast<size_t>(topo[i])] = static_cast<double>(i);
  // Refine a candidate, then alternate: split the order its stages induce exactly (the DP
  // may move all cuts at once) and refine again, while that improves.
  auto consider = [&](std::vector<int> stage, const std::string& method) {
    if (!all_stages_used(stage, k)) return;
    double current = kInf;
    for (int round = 0; round < 4; ++round) {
      stage = refine(dag, pipeline, adj, topo, std::move(stage), options.refine_passes);
      auto r = evaluate_partition(dag, pipeline, stage, method);
      if (!r.ok() || r->bottleneck >= current * (1 - 1e-12)) break;
      current = r->bottleneck;
      if (r->bottleneck < best.bottleneck * (1 - 1e-12)) best = std::move(r).value();
      std::vector<double> priority(dag.size());
      for (size_t v = 0; v < dag.size(); ++v)
        priority[v] = stage[v] * static_cast<double>(dag.size() + 1) + topo_pos[v];
      auto order = kahn_order(dag, adj, priority);
      if (!order.ok()) break;
      auto again = chain_dp(dag, pipeline, *order);
      if (!again.ok()) break;
      stage = std::move(again).value();
    }
  };
  consider(dp_stage, "chain-dp+refine");
  if (dag.size() <= kMaxOrderSearchNodes) {
    for (const std::vector<int>& order : extra_orders(dag, adj, options.seed)) {
      auto stage = chain_dp(dag, pipeline, order);
      if (stage.ok()) consider(std::move(stage).value(), "other-order+dp+refine");
    }
  }
  if (!options.use_metis) return best;

  auto parts = metis_parts(dag, pipeline, adj, options.seed);
  if (!parts.ok()) {
    best.method += " (METIS not used: " + parts.status().message() + ")";
    return best;
  }
  const std::vector<int> rank = rank_parts(*parts, topo, k);
  // Candidate 2: METIS parts made acyclic by a sweep in topological order: each node
  // goes to its part's stage, or later if a predecessor is already later.
  {
    std::vector<int> stage(dag.size(), 0);
    for (int v : topo) {
      int s = rank[static_cast<size_t>((*parts)[static_cast<size_t>(v)])];
      for (int p : adj.pred[static_cast<size_t>(v)]) s = std::max(s, stage[static_cast<size_t>(p)]);
      stage[static_cast<size_t>(v)] = s;
    }
    consider(std::move(stage), "metis+sweep+refine");
  }
  // Candidate 3: the topological order that keeps METIS's parts together (parts in
  // pipeline rank), split exactly by the DP, then refined.
  {
    std::vector<double> priority(dag.size());
    for (size_t v = 0; v < dag.size(); ++v)
      priority[v] = rank[static_cast<size_t>((*parts)[v])] * static_cast<double>(dag.size() + 1) + topo_pos[v];
    auto order = kahn_order(dag, adj, priority);
    if (order.ok()) {
      auto stage = chain_dp(dag, pipeline, *order);
      if (stage.ok()) consider(std::move(stage).value(), "metis-order+dp+refine");
    }
  }
  return best;
}

Result<MachineOrder> choose_machine_order(const WeightedDag& dag, const std::vector<Machine>& machines,
                                          const std::vector<std::vector<double>>& bandwidth,
                                          const PartitionOptions& options) {
  const size_t k = machines.size();
  if (bandwidth.size() != k)
    return error(Code::kInvalidArgument, "the bandwidth matrix has ", bandwidth.size(), " rows for ", k, " machines");
  for (const auto& row : bandwidth)
    if (row.size() != k)
      return error(Code::kInvalidArgument, "the bandwidth matrix needs ", k, " columns per row, not ", row.size());
  auto pipeline_for = [&](const std::vector<int>& order) -> Result<Pipeline> {
    Pipeline p;
    for (int m : order) p.machines.push_back(machines[static_cast<size_t>(m)]);
    for (size_t s = 0; s + 1 < k; ++s) {
      size_t a = static_cast<size_t>(order[s]), b = static_cast<size_t>(order[s + 1]);
      double bw = std::max(bandwidth[a][b], bandwidth[b][a]);
      if (!(bw > 0)) return error(Code::kInvalidArgument, "no link between machines ", a, " and ", b);
      p.link_bandwidth.push_back(bw);
    }
    return p;
  };
  RN_ASSIGN_OR_RETURN(Pipeline given, pipeline_for([&] {
    std::vector<int> o(k);
    std::iota(o.begin(), o.end(), 0);
    return o;
  }()));
  RN_RETURN_IF_ERROR(validate(dag, given));
  const Adjacency adj = build_adjacency(dag);
  RN_ASSIGN_OR_RETURN(std::vector<int> topo, kahn_order(dag, adj, {}));
  // Score: the chain DP's bottleneck on the topological order (kInf when nothing fits).
  // The prefix sums are shared by every arrangement. An arrangement is only taken when its
  // score is below `beat` * (1 - 1e-12); when one probe of the DP at that level plus the
  // rounding margin finds no split, its score cannot be (a split scoring v meets every
  // threshold >= v + margin), so the bisection is skipped and the result is unchanged.
  const ChainPrefix prefix = chain_prefix(dag, topo);
  auto score = [&](const std::vector<int>& order, double beat) {
    auto p = pipeline_for(order);
    if (!p.ok()) return kInf;
    ChainDp dp(prefix, *p);
    if (beat < kInf) {
      const double margin = rounding_margin(dag, *p);
      if (margin < kInf && !dp.feasible(beat * (1 - 1e-12) + 2 * margin)) return kInf;
    }
    auto stage = chain_dp_bisect(dag, *p, prefix, dp);
    return stage.ok() ? make_result(dag, *p, *stage, "").bottleneck : kInf;
  };
  std::vector<int> order(k);
  std::iota(order.begin(), order.end(), 0);
  std::vector<int> best_order = order;
  double best = score(order, kInf);
  // Interchangeable machines (same speed, memory and in-flight count, same links to
  // every other machine) give the same score in either place: classes of them, and
  // only the distinct arrangements of the classes are scored (8 machines of 2 kinds:
  // 70 orders, not 40320).
  std::vector<int> kind(k, -1);
  int kinds = 0;
  auto same = [&](size_t a, size_t b) {
    const Machine& x = machines[a];
    const Machine& y = machines[b];
    if (x.speed != y.speed || x.memory_bytes != y.memory_bytes || x.in_flight != y.in_flight) return false;
    if (bandwidth[a][b] != bandwidth[b][a]) return false;
    for (size_t c = 0; c < k; ++c)
      if (c != a && c != b && (bandwidth[a][c] != bandwidth[b][c] || bandwidth[c][a] != bandwidth[c][b])) return false;
    return true;
  };
  std::vector<size_t> representative;
  for (size_t m = 0; m < k; ++m) {
    for (int c = 0; c < kinds && kind[m] < 0; ++c)
      if (same(representative[static_cast<size_t>(c)], m)) kind[m] = c;
    if (kind[m] < 0) {
      kind[m] = kinds++;
      representative.push_back(m);
    }
  }
  // The distinct arrangements: k! / prod(count_c!).
  std::vector<int> count(static_cast<size_t>(kinds), 0);
  for (int c : kind) ++count[static_cast<size_t>(c)];
  double permutations = 1;
  for (size_t i = 2; i <= k; ++i) permutations *= static_cast<double>(i);
  for (int c : count)
    for (int i = 2; i <= c; ++i) permutations /= static_cast<double>(i);
  // An arrangement of kinds -> an order of machines (each kind's machines in index order).
  auto order_of = [&](const std::vector<int>& kinds_seq) {
    std::vector<std::vector<int>> pool(static_cast<size_t>(kinds));
    for (size_t m = k; m-- > 0;) pool[static_cast<size_t>(kind[m])].push_back(static_cast<int>(m));
    std::vector<int> o;
    for (int c : kinds_seq) {
      o.push_back(pool[static_cast<size_t>(c)].back());
      pool[static_cast<size_t>(c)].pop_back();
    }
    return o;
  };
  if (permutations <= 40320 && permutations * static_cast<double>(dag.size()) <= 2e7) {
    std::vector<int> seq(kind);
    std::sort(seq.begin(), seq.end());
    do {
      std::vector<int> candidate = order_of(seq);
      double v = score(candidate, best);
      if (v < best * (1 - 1e-12)) {
        best = v;
        best_order = std::move(candidate);
      }
    } while (std::next_permutation(seq.begin(), seq.end()));
  } else {
    for (bool improved = true; improved;) {
      improved = false;
      for (size_t i = 0; i < k && !improved; ++i)
        for (size_t j = i + 1; j < k && !improved; ++j) {
          std::vector<int> next = best_order;
          std::swap(next[i], next[j]);
          double v = score(next, best);
          if (v < best * (1 - 1e-12)) {
            best = v;
            best_order = std::move(next);
            improved = true;
          }
        }
    }
  }
  RN_ASSIGN_OR_RETURN(Pipeline chosen, pipeline_for(best_order));
  MachineOrder out;
  out.order = best_order;
  RN_ASSIGN_OR_RETURN(out.partition, partition_dag(dag, chosen, options));
  return out;
}

Result<DagPartition> partition_brute_force(const WeightedDag& dag, const Pipeline& pipeline) {
  RN_RETURN_IF_ERROR(validate(dag, pipeline));
  const size_t n = dag.size(), k = pipeline.machines.size();
  if (n > 14 || std::pow(static_cast<double>(k), static_cast<double>(n)) > 5e6)
    return error(Code::kInvalidArgument, "brute force is for small graphs: ", n, " nodes on ", k, " stages is too many");
  const Adjacency adj = build_adjacency(dag);
  RN_ASSIGN_OR_RETURN(std::vector<int> topo, kahn_order(dag, adj, {}));
  std::vector<int> stage(n, 0), best_stage;
  double best = kInf;
  // Assign nodes in topological order; a node's stage is at least each predecessor's.
  std::function<void(size_t)> visit = [&](size_t i) {
    if (i == n) {
      if (!all_stages_used(stage, k)) return;
      Costs c = compute_costs(dag, pipeline, stage);
      Objective o = objective(c, pipeline);
      if (o.overflow > 0 || o.bottleneck >= best) return;
      best = o.bottleneck;
      best_stage = stage;
      return;
    }
    const size_t v = static_cast<size_t>(topo[i]);
    int lo = 0;
    for (int p : adj.pred[v]) lo = std::max(lo, stage[static_cast<size_t>(p)]);
    for (int s = lo; s < static_cast<int>(k); ++s) {
      stage[v] = s;
      visit(i + 1);
    }
  };
  visit(0);
  if (best_stage.empty()) {
    RN_ASSIGN_OR_RETURN(std::vector<int> any, chain_dp(dag, pipeline, topo));  // produces the memory error
    best_stage = std::move(any);
  }
  return evaluate_partition(dag, pipeline, std::move(best_stage), "brute-force");
}

}  // namespace ravnest::part
