// The chain DP (partition_chain_dp) and choose_machine_order against references kept in
// this file: the DP as it was before its precomputed, pruned rewrite (split per probe
// from scratch, a std::deque window, bisection keeping the last feasible split), which
// must give the identical split or the identical memory error on random chains (k = 1..8,
// random compute / memory / activation weights with exact ties, memory caps that make
// some instances infeasible, random link bandwidths, skip tensors); an exhaustive
// enumeration of the contiguous splits, whose best bottleneck the DP must reach; and
// choose_machine_order scoring every arrangement with the reference DP, unpruned, which
// must pick the same machine order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <limits>
#include <numeric>
#include <random>

#include "partitioner/dag_partition.h"

namespace ravnest::part {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double capacity(const Machine& m) { return m.memory_bytes > 0 ? m.memory_bytes : kInf; }
double link_bw(const Pipeline& p, size_t l) { return p.link_bandwidth.empty() ? kInf : p.link_bandwidth[l]; }
double activation_of(const WeightedDag& dag, size_t v) { return v < dag.activation.size() ? dag.activation[v] : 0.0; }

Pipeline without_memory_limits(Pipeline p) {
  for (Machine& m : p.machines) m.memory_bytes = 0;
  return p;
}

// The bottleneck of a split under the cost model (memory ignored).
double bottleneck_of(const WeightedDag& dag, const Pipeline& pipeline, const std::vector<int>& stage) {
  auto r = evaluate_partition(dag, without_memory_limits(pipeline), stage);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? r->bottleneck : kInf;
}

// The chain DP before the rewrite, verbatim in its decisions.
class ReferenceChainDp {
 public:
  ReferenceChainDp(const WeightedDag& dag, const Pipeline& pipeline, const std::vector<int>& order)
      : pipeline_(pipeline), order_(order), n_(order.size()), k_(pipeline.machines.size()) {
    work_.assign(n_ + 1, 0);
    fixed_.assign(n_ + 1, 0);
    act_.assign(n_ + 1, 0);
    cross_.assign(n_ + 1, 0);
    std::vector<size_t> pos(n_);
    for (size_t i = 0; i < n_; ++i) pos[static_cast<size_t>(order[i])] = i;
    for (size_t i = 0; i < n_; ++i) {
      size_t v = static_cast<size_t>(order[i]);
      work_[i + 1] = work_[i] + dag.compute[v];
      fixed_[i + 1] = fixed_[i] + dag.memory[v];
      act_[i + 1] = act_[i] + activation_of(dag, v);
    }
    std::vector<double> diff(n_ + 2, 0);
    for (const DagTensor& x : dag.tensors) {
      size_t p = pos[static_cast<size_t>(x.producer)], m = p;
      for (int c : x.consumers) m = std::max(m, pos[static_cast<size_t>(c)]);
      if (m > p) {
        diff[p + 1] += x.bytes;
        diff[m + 1] -= x.bytes;
      }
    }
    double run = 0;
    for (size_t i = 0; i <= n_; ++i) cross_[i] = (run += diff[i]);
  }

  std::vector<int> solve(double limit) const {
    std::vector<std::vector<char>> reach(k_ + 1, std::vector<char>(n_ + 1, 0));
    std::vector<std::vector<int>> from(k_ + 1, std::vector<int>(n_ + 1, -1));
    reach[0][0] = 1;
    for (size_t s = 0; s < k_; ++s) {
      const Machine& m = pipeline_.machines[s];
      const double cap = capacity(m);
      const double bw_in = s > 0 ? link_bw(pipeline_, s - 1) : kInf, bw_out = s + 1 < k_ ? link_bw(pipeline_, s) : kInf;
      auto transfer = [](double bytes, double bw) { return bytes > 0 ? bytes / bw : 0.0; };
      auto g = [&](size_t a) { return work_[a] / m.speed - transfer(cross_[a], bw_in); };
      std::deque<size_t> window;
      size_t lo = 0, next = 0;
      const size_t last_b = n_ - (k_ - 1 - s);
      for (size_t b = s + 1; b <= last_b; ++b) {
        while (lo < b && fixed_[b] - fixed_[lo] + (act_[b] - act_[lo]) * m.in_flight > cap * (1 + 1e-12)) ++lo;
        for (; next < b; ++next) {
          if (!reach[s][next]) continue;
          while (!window.empty() && g(window.back()) <= g(next)) window.pop_back();
          window.push_back(next);
        }
        while (!window.empty() && window.front() < lo) window.pop_front();
        if (window.empty()) continue;
        if (s + 1 == k_ && b != n_) continue;
        size_t a = window.front();
        double cost = (work_[b] - work_[a]) / m.speed + transfer(cross_[a], bw_in) + transfer(cross_[b], bw_out);
        if (cost <= limit * (1 + 1e-12)) {
          reach[s + 1][b] = 1;
          from[s + 1][b] = static_cast<int>(a);
        }
      }
    }
    if (!reach[k_][n_]) return {};
    std::vector<int> stage(n_, 0);
    size_t end = n_;
    for (size_t s = k_; s >= 1; --s) {
      size_t begin = static_cast<size_t>(from[s][end]);
      for (size_t i = begin; i < end; ++i) stage[static_cast<size_t>(order_[i])] = static_cast<int>(s - 1);
      end = begin;
    }
    return stage;
  }

 private:
  Pipeline pipeline_;
  std::vector<int> order_;
  size_t n_, k_;
  std::vector<double> work_, fixed_, act_, cross_;
};

// The reference bisection: the split, or (memory-infeasible) `fits` false and the split
// that ignores memory, which the memory error describes.
struct ReferenceResult {
  bool fits = false;
  std::vector<int> stage;
};

// Bisects the bottleneck limit of `dp` down from the split `best` until the interval is `width` relative.
std::vector<int> reference_bisect(const WeightedDag& dag, const Pipeline& pipeline, ReferenceChainDp& dp,
                                  std::vector<int> best, double width) {
  double lo = 0, hi = bottleneck_of(dag, pipeline, best);
  for (int it = 0; it < 200 && hi - lo > width * hi; ++it) {
    double mid = 0.5 * (lo + hi);
    std::vector<int> s = dp.solve(mid);
    if (s.empty()) lo = mid; else { hi = mid; best = std::move(s); }
  }
  return best;
}

ReferenceResult reference_chain_dp(const WeightedDag& dag, const Pipeline& pipeline, const std::vector<int>& order) {
  ReferenceChainDp dp(dag, pipeline, order);
  std::vector<int> best = dp.solve(kInf);
  if (best.empty()) {
    ReferenceChainDp loose_dp(dag, without_memory_limits(pipeline), order);
    return {false, reference_bisect(dag, pipeline, loose_dp, loose_dp.solve(kInf), 1e-12)};
  }
  return {true, reference_bisect(dag, pipeline, dp, std::move(best), 1e-13)};
}

// Every contiguous split of the node order into k non-empty stages: the best bottleneck
// among those that fit memory (kInf when none does).
double exhaustive_best(const WeightedDag& dag, const Pipeline& pipeline) {
  const size_t n = dag.size(), k = pipeline.machines.size();
  std::vector<size_t> cut(k + 1, 0);  // stage s spans [cut[s], cut[s+1])
  double best = kInf;
  std::function<void(size_t)> place = [&](size_t s) {
    if (s + 1 == k) {
      cut[k] = n;
      std::vector<int> stage(n);
      for (size_t t = 0; t < k; ++t)
        for (size_t i = cut[t]; i < cut[t + 1]; ++i) stage[i] = static_cast<int>(t);
      auto r = evaluate_partition(dag, without_memory_limits(pipeline), stage);
      if (!r.ok()) return;
      for (size_t t = 0; t < k; ++t)
        if (r->stage_memory[t] > capacity(pipeline.machines[t]) * (1 + 1e-12)) return;
      best = std::min(best, r->bottleneck);
      return;
    }
    for (size_t end = cut[s] + 1; end + (k - 1 - s) <= n; ++end) {
      cut[s + 1] = end;
      place(s + 1);
    }
  };
  place(0);
  return best;
}

// A chain 0 -> 1 -> ... -> n-1 plus skip tensors to later nodes. Weights are small
// integers (many exact ties, zero-compute nodes) or uniform reals.
WeightedDag random_chain(std::mt19937& rng, size_t n) {
  WeightedDag dag;
  const bool integers = rng() % 2 == 0;
  std::uniform_real_distribution<double> real(0.0, 10.0);
  auto weight = [&] { return integers ? static_cast<double>(rng() % 4) : real(rng); };
  for (size_t v = 0; v < n; ++v) {
    dag.compute.push_back(weight());
    dag.memory.push_back(weight());
    dag.activation.push_back(weight() / 2);
  }
  for (size_t v = 0; v + 1 < n; ++v) {
    DagTensor t;
    t.producer = static_cast<int>(v);
    t.consumers.push_back(static_cast<int>(v + 1));
    if (rng() % 3 == 0) t.consumers.push_back(static_cast<int>(v + 1 + rng() % (n - v - 1)));
    t.bytes = weight();
    dag.tensors.push_back(std::move(t));
  }
  return dag;
}

Pipeline random_pipeline(std::mt19937& rng, const WeightedDag& dag, size_t k) {
  std::uniform_real_distribution<double> speed(0.5, 4.0), bw(0.5, 20.0), slack(0.3, 1.5);
  double total_mem = 0;
  for (size_t v = 0; v < dag.size(); ++v) total_mem += dag.memory[v] + 4 * dag.activation[v];
  Pipeline p;
  const int memory_mode = static_cast<int>(rng() % 3);  // 0: unlimited, 1: some limited, 2: all tight
  for (size_t s = 0; s < k; ++s) {
    Machine m;
    m.speed = rng() % 4 == 0 ? 1.0 : speed(rng);
    m.in_flight = static_cast<double>(1 + rng() % 4);
    if (memory_mode == 1 && rng() % 2 == 0) m.memory_bytes = slack(rng) * total_mem / static_cast<double>(k) * 2;
    if (memory_mode == 2) m.memory_bytes = slack(rng) * total_mem / static_cast<double>(k);
    p.machines.push_back(m);
  }
  if (rng() % 4 != 0)
    for (size_t l = 0; l + 1 < k; ++l) p.link_bandwidth.push_back(bw(rng));
  return p;
}

TEST(ChainDp, IdenticalToTheReferenceDpAndOptimalOnRandomChains) {
  std::mt19937 rng(20261126);
  int feasible = 0, infeasible = 0;
  for (int trial = 0; trial < 600; ++trial) {
    const size_t k = 1 + static_cast<size_t>(trial % 8);
    const size_t n = k + static_cast<size_t>(rng() % 11);
    WeightedDag dag = random_chain(rng, n);
    Pipeline pipeline = random_pipeline(rng, dag, k);
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    SCOPED_TRACE(testing::Message() << "trial " << trial << ": " << n << " nodes, " << k << " stages");
    ReferenceResult ref = reference_chain_dp(dag, pipeline, order);
    auto got = partition_chain_dp(dag, pipeline);
    const double exhaustive = exhaustive_best(dag, pipeline);
    if (ref.fits) {
      ++feasible;
      ASSERT_TRUE(got.ok()) << got.status().message();
      EXPECT_EQ(got->stage_of_node, ref.stage);
      ASSERT_LT(exhaustive, kInf);
      EXPECT_NEAR(got->bottleneck, exhaustive, 1e-9 * std::max(1.0, exhaustive));
    } else {
      ++infeasible;
      ASSERT_FALSE(got.ok());
      EXPECT_EQ(got.status().code(), Code::kResourceExhausted);
      // The memory error describes the reference's memory-blind split, word for word.
      auto expected = evaluate_partition(dag, pipeline, ref.stage);
      ASSERT_FALSE(expected.ok());
      EXPECT_EQ(got.status().message(), expected.status().message());
      EXPECT_EQ(exhaustive, kInf);
    }
  }
  // Both kinds of instance were exercised.
  EXPECT_GT(feasible, 100);
  EXPECT_GT(infeasible, 30);
}

TEST(ChainDp, LongerChainsMatchTheReferenceDp) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 60; ++trial) {
    const size_t k = 1 + static_cast<size_t>(rng() % 8);
    const size_t n = 50 + static_cast<size_t>(rng() % 400);
    WeightedDag dag = random_chain(rng, n);
    Pipeline pipeline = random_pipeline(rng, dag, k);
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    SCOPED_TRACE(testing::Message() << "trial " << trial << ": " << n << " nodes, " << k << " stages");
    ReferenceResult ref = reference_chain_dp(dag, pipeline, order);
    auto got = partition_chain_dp(dag, pipeline);
    ASSERT_EQ(got.ok(), ref.fits) << (got.ok() ? "" : got.status().message());
    if (got.ok()) {
      EXPECT_EQ(got->stage_of_node, ref.stage);
    }
  }
}

// choose_machine_order with every machine distinct: the reference scores each of the k!
// orders (lexicographic, from the identity) with the reference DP and keeps the first
// strictly better one, as choose_machine_order's enumeration does, without pruning.
TEST(ChainDp, MachineOrderIdenticalToUnprunedReferenceScoring) {
  std::mt19937 rng(99);
  int changed = 0;
  for (int trial = 0; trial < 40; ++trial) {
    const size_t k = 2 + static_cast<size_t>(trial % 4);
    const size_t n = 3 * k + static_cast<size_t>(rng() % 30);
    WeightedDag dag = random_chain(rng, n);
    for (double& c : dag.compute) c += 0.5;  // avoid fully degenerate instances
    Pipeline base = random_pipeline(rng, dag, k);
    std::vector<Machine> machines = base.machines;
    for (size_t m = 0; m < k; ++m) machines[m].speed = 1.0 + static_cast<double>(m) * 0.37 + 0.01 * (rng() % 7);
    std::uniform_real_distribution<double> bw(0.5, 20.0);
    std::vector<std::vector<double>> bandwidth(k, std::vector<double>(k, 0));
    for (size_t a = 0; a < k; ++a)
      for (size_t b = a + 1; b < k; ++b) bandwidth[a][b] = bandwidth[b][a] = bw(rng);
    SCOPED_TRACE(testing::Message() << "trial " << trial << ": " << n << " nodes, " << k << " machines");
    std::vector<int> topo(n);
    std::iota(topo.begin(), topo.end(), 0);
    auto score = [&](const std::vector<int>& order) {
      Pipeline p;
      for (int m : order) p.machines.push_back(machines[static_cast<size_t>(m)]);
      for (size_t s = 0; s + 1 < k; ++s)
        p.link_bandwidth.push_back(bandwidth[static_cast<size_t>(order[s])][static_cast<size_t>(order[s + 1])]);
      ReferenceResult r = reference_chain_dp(dag, p, topo);
      return r.fits ? bottleneck_of(dag, p, r.stage) : kInf;
    };
    std::vector<int> order(k);
    std::iota(order.begin(), order.end(), 0);
    std::vector<int> expected = order;
    double best = score(order);
    do {
      double v = score(order);
      if (v < best * (1 - 1e-12)) {
        best = v;
        expected = order;
      }
    } while (std::next_permutation(order.begin(), order.end()));
    PartitionOptions options;
    options.use_metis = false;
    auto got = choose_machine_order(dag, machines, bandwidth, options);
    if (best == kInf) {
      EXPECT_FALSE(got.ok());
      continue;
    }
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_EQ(got->order, expected);
    std::vector<int> identity(k);
    std::iota(identity.begin(), identity.end(), 0);
    if (expected != identity) ++changed;
  }
  EXPECT_GT(changed, 10);  // the search had something to find
}

}  // namespace
}  // namespace ravnest::part
