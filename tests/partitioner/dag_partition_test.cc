// The DAG partitioner: every result is acyclic, covers each node once, fills every
// stage and fits memory; its bottleneck is within 5% of brute force on small DAGs with
// branches and equals the exact DP on chains; speeds 1:2:4 give balanced stage times;
// memory that cannot fit is a clear error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include "partitioner/contiguous.h"
#include "partitioner/dag_partition.h"

namespace ravnest::part {
namespace {

// Inception-like random DAG: a stem, then modules of fan-out -> 2..3 branches of 1..2
// nodes -> fan-in, plus random skip edges to later nodes; ends in one sink.
WeightedDag random_dag(std::mt19937& rng, int target_nodes, bool skips = true) {
  std::uniform_real_distribution<double> compute(1.0, 10.0), bytes(0.1, 3.0), mem(0.0, 5.0);
  WeightedDag dag;
  std::vector<std::vector<int>> preds;
  auto add = [&](std::vector<int> from) {
    dag.compute.push_back(compute(rng));
    dag.memory.push_back(mem(rng));
    dag.activation.push_back(mem(rng) / 4);
    preds.push_back(std::move(from));
    return static_cast<int>(dag.compute.size()) - 1;
  };
  int last = add({});
  while (static_cast<int>(dag.compute.size()) < target_nodes - 1) {
    int branches = 2 + static_cast<int>(rng() % 2);
    std::vector<int> ends;
    for (int b = 0; b < branches && static_cast<int>(dag.compute.size()) < target_nodes - 2; ++b) {
      int prev = last, len = 1 + static_cast<int>(rng() % 2);
      for (int i = 0; i < len; ++i) prev = add({prev});
      ends.push_back(prev);
    }
    if (ends.empty()) break;
    last = add(ends);
  }
  if (static_cast<int>(dag.compute.size()) < target_nodes) last = add({last});
  const int n = static_cast<int>(dag.compute.size());
  if (skips)
    for (int e = 0; e < n / 4; ++e) {
      int a = static_cast<int>(rng() % static_cast<unsigned>(n)), b = static_cast<int>(rng() % static_cast<unsigned>(n));
      if (a == b) continue;
      if (a > b) std::swap(a, b);
      if (std::find(preds[static_cast<size_t>(b)].begin(), preds[static_cast<size_t>(b)].end(), a) ==
          preds[static_cast<size_t>(b)].end())
        preds[static_cast<size_t>(b)].push_back(a);
    }
  // One tensor per node, read by all its successors.
  std::vector<DagTensor> out(static_cast<size_t>(n));
  for (int v = 0; v < n; ++v) {
    out[static_cast<size_t>(v)].producer = v;
    out[static_cast<size_t>(v)].bytes = bytes(rng);
  }
  for (int v = 0; v < n; ++v)
    for (int p : preds[static_cast<size_t>(v)]) out[static_cast<size_t>(p)].consumers.push_back(v);
  for (auto& t : out)
    if (!t.consumers.empty()) dag.tensors.push_back(t);
  return dag;
}

WeightedDag chain(const std::vector<double>& compute, double bytes) {
  WeightedDag dag;
  dag.compute = compute;
  dag.memory.assign(compute.size(), 1.0);
  for (size_t v = 0; v + 1 < compute.size(); ++v) dag.tensors.push_back({static_cast<int>(v), {static_cast<int>(v + 1)}, bytes});
  return dag;
}

Pipeline pipeline_of(const std::vector<double>& speeds, double bandwidth) {
  Pipeline p;
  for (size_t s = 0; s < speeds.size(); ++s) p.machines.push_back({"m" + std::to_string(s), speeds[s], 0, 1});
  if (bandwidth > 0) p.link_bandwidth.assign(speeds.size() - 1, bandwidth);
  return p;
}

// The guarantees of dag_partition.h, checked independently of the partitioner.
void expect_valid(const WeightedDag& dag, const Pipeline& pipeline, const DagPartition& part) {
  const size_t k = pipeline.machines.size();
  ASSERT_EQ(part.stage_of_node.size(), dag.size());
  std::vector<int> count(k, 0);
  std::vector<double> mem(k, 0);
  for (size_t v = 0; v < dag.size(); ++v) {
    int s = part.stage_of_node[v];
    ASSERT_GE(s, 0);
    ASSERT_LT(s, static_cast<int>(k));
    ++count[static_cast<size_t>(s)];
    mem[static_cast<size_t>(s)] += dag.memory[v] + (dag.activation.empty() ? 0 : dag.activation[v]) *
                                                        pipeline.machines[static_cast<size_t>(s)].in_flight;
  }
  for (size_t s = 0; s < k; ++s) {
    EXPECT_GT(count[s], 0) << "stage " << s << " is empty";
    if (pipeline.machines[s].memory_bytes > 0) {
      EXPECT_LE(mem[s], pipeline.machines[s].memory_bytes * (1 + 1e-9));
    }
  }
  for (const DagTensor& t : dag.tensors)
    for (int c : t.consumers)
      EXPECT_GE(part.stage_of_node[static_cast<size_t>(c)], part.stage_of_node[static_cast<size_t>(t.producer)])
          << "edge " << t.producer << "->" << c << " goes backwards";
  double worst = *std::max_element(part.stage_time.begin(), part.stage_time.end());
  EXPECT_NEAR(worst, part.bottleneck, 1e-9 * worst);
}

TEST(DagPartition, SmallBranchyDagsWithin5PercentOfBruteForce) {
  std::mt19937 rng(11);
  const std::vector<double> speed_sets[] = {{1, 1}, {1, 2}, {1, 2, 4}, {4, 1, 2}, {1, 1, 1}};
  double worst_gap = 0;
  int trials = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const auto& speeds = speed_sets[trial % 5];
    WeightedDag dag = random_dag(rng, 8 + trial % 5);
    Pipeline p = pipeline_of(speeds, trial % 3 == 0 ? 0.0 : 1.0 + trial % 4);
    if (trial % 4 == 1) {  // memory that binds: capacities a bit above an even share
      double total = 0;
      for (size_t v = 0; v < dag.size(); ++v) total += dag.memory[v] + dag.activation[v];
      for (auto& m : p.machines) m.memory_bytes = 1.3 * total / static_cast<double>(speeds.size());
    }
    auto exact = partition_brute_force(dag, p);
    if (!exact.ok()) {  // memory infeasible: the partitioner must fail too
      EXPECT_EQ(exact.status().code(), Code::kResourceExhausted) << exact.status().message();
      EXPECT_FALSE(partition_dag(dag, p).ok());
      continue;
    }
    auto got = partition_dag(dag, p);
    ASSERT_TRUE(got.ok()) << got.status().message();
    expect_valid(dag, p, *got);
    EXPECT_GE(got->bottleneck, exact->bottleneck * (1 - 1e-9));
    double gap = got->bottleneck / exact->bottleneck - 1;
    worst_gap = std::max(worst_gap, gap);
    EXPECT_LE(gap, 0.05) << "trial " << trial << " method " << got->method;
    ++trials;
  }
  std::printf("[ info ] %d small DAGs: worst gap to brute force %.3f%%\n", trials, 100 * worst_gap);
  EXPECT_GT(trials, 40);
}

TEST(DagPartition, ChainsMatchExactDp) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> cost(0.5, 10.0);
  for (int trial = 0; trial < 30; ++trial) {
    std::vector<double> compute(40 + trial);
    for (double& c : compute) c = cost(rng);
    std::vector<double> speeds = trial % 2 ? std::vector<double>{1, 2, 4} : std::vector<double>{2, 1, 1, 3};
    WeightedDag dag = chain(compute, trial % 3 == 0 ? 0.0 : 2.0);
    Pipeline p = pipeline_of(speeds, 1.5);
    auto dp = partition_chain_dp(dag, p);
    auto got = partition_dag(dag, p);
    ASSERT_TRUE(dp.ok() && got.ok());
    expect_valid(dag, p, *got);
    // On a chain every acyclic split is contiguous, so the DP is the optimum.
    EXPECT_NEAR(got->bottleneck, dp->bottleneck, 1e-9 * dp->bottleneck) << got->method;
    if (trial % 3 == 0) {  // no transfers: the existing contiguous splitter agrees
      auto ref = split_contiguous(compute, speeds);
      ASSERT_TRUE(ref.ok());
      EXPECT_NEAR(dp->bottleneck, ref->bottleneck, 1e-9 * ref->bottleneck);
    }
  }
}

TEST(DagPartition, ChainDpWithTransfersAndMemoryMatchesBruteForce) {
  std::mt19937 rng(8);
  std::uniform_real_distribution<double> cost(0.5, 10.0), mem(0.0, 4.0);
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<double> compute(6 + trial % 7);
    for (double& c : compute) c = cost(rng);
    WeightedDag dag = chain(compute, 0);
    for (auto& t : dag.tensors) t.bytes = cost(rng);
    for (double& m : dag.memory) m = mem(rng);
    Pipeline p = pipeline_of(trial % 2 ? std::vector<double>{1, 2, 4} : std::vector<double>{3, 1}, 2.0);
    for (auto& m : p.machines) m.memory_bytes = 12;
    auto exact = partition_brute_force(dag, p);
    auto dp = partition_chain_dp(dag, p);
    ASSERT_EQ(exact.ok(), dp.ok()) << (exact.ok() ? dp.status().message() : exact.status().message());
    if (!exact.ok()) continue;
    EXPECT_NEAR(dp->bottleneck, exact->bottleneck, 1e-9 * exact->bottleneck);
  }
}

TEST(DagPartition, LargerBranchyDagsAreValidAndNoWorseThanTheDp) {
  std::mt19937 rng(21);
  double best_gain = 0;
  for (int trial = 0; trial < 24; ++trial) {
    std::vector<double> speeds = trial % 3 == 0 ? std::vector<double>{1, 2} : trial % 3 == 1 ? std::vector<double>{1, 2, 4}
                                                                                            : std::vector<double>{4, 2, 1, 1};
    WeightedDag dag = random_dag(rng, 150 + 10 * trial);
    Pipeline p = pipeline_of(speeds, 2.0);
    std::vector<int> topo = *topological_order(dag);
    auto dp = partition_chain_dp(dag, p, topo);
    auto got = partition_dag(dag, p);
    ASSERT_TRUE(dp.ok() && got.ok()) << got.status().message();
    expect_valid(dag, p, *got);
    EXPECT_LE(got->bottleneck, dp->bottleneck * (1 + 1e-9));
    EXPECT_EQ(got->method.find("METIS not used"), std::string::npos) << got->method;
    best_gain = std::max(best_gain, 1 - got->bottleneck / dp->bottleneck);
  }
  std::printf("[ info ] METIS+refine beat the topological-order DP by up to %.2f%%\n", 100 * best_gain);
}

TEST(DagPartition, Speeds124GiveBalancedStagesOnAUniformChain) {
  WeightedDag dag = chain(std::vector<double>(700, 1.0), 0.01);
  Pipeline p = pipeline_of({1, 2, 4}, 10.0);
  auto got = partition_dag(dag, p);
  ASSERT_TRUE(got.ok());
  expect_valid(dag, p, *got);
  double lo = *std::min_element(got->stage_time.begin(), got->stage_time.end());
  double hi = *std::max_element(got->stage_time.begin(), got->stage_time.end());
  std::printf("[ info ] speeds 1:2:4, uniform chain: slowest / fastest stage time %.4f\n", hi / lo);
  EXPECT_LE(hi / lo, 1.10) << "stage times " << got->stage_time[0] << " " << got->stage_time[1] << " "
                           << got->stage_time[2];
  // 700 = 100 + 200 + 400: the ideal split.
  EXPECT_NEAR(got->stage_compute[0], 100, 1.0);
}

TEST(DagPartition, MetisIsSkippedForTinyGraphsAndSaysSo) {
  WeightedDag dag = chain({1, 2, 3}, 1);
  Pipeline p = pipeline_of({1, 1}, 1);
  auto got = partition_dag(dag, p);
  ASSERT_TRUE(got.ok());
  EXPECT_NE(got->method.find("METIS not used: too few nodes"), std::string::npos) << got->method;
}

TEST(DagPartition, InfeasibleMemoryNamesTheMachineAndWhatWouldFit) {
  WeightedDag dag = chain(std::vector<double>(12, 1.0), 1);
  dag.memory.assign(12, 100.0);
  dag.activation.assign(12, 50.0);
  Pipeline p = pipeline_of({1, 1, 1}, 1);
  // 12 nodes: 1200 fixed + 600 per micro-batch; 4 in flight on every stage.
  for (auto& m : p.machines) {
    m.memory_bytes = 1000;
    m.in_flight = 4;
  }
  p.machines[0].id = "laptop";
  auto got = partition_dag(dag, p);
  ASSERT_FALSE(got.ok());
  const std::string msg = got.status().message();
  EXPECT_EQ(got.status().code(), Code::kResourceExhausted);
  EXPECT_NE(msg.find("machine 'laptop' (stage 0) needs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lacks"), std::string::npos) << msg;
  EXPECT_NE(msg.find("micro-batches in flight instead of 4"), std::string::npos) << msg;
  // With 2 in flight it fits (4 nodes: 400 + 2 x 200 = 800).
  for (auto& m : p.machines) m.in_flight = 2;
  auto fits = partition_dag(dag, p);
  ASSERT_TRUE(fits.ok()) << fits.status().message();
  expect_valid(dag, p, *fits);
  // Too little memory in total: the error asks for more stages.
  for (auto& m : p.machines) m.memory_bytes = 300;
  auto none = partition_dag(dag, p);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("more stages"), std::string::npos) << none.status().message();
}

TEST(DagPartition, MachineOrderPutsFastLinksWhereBigTensorsCross) {
  // Machines 0 and 2 are joined by a slow link; 1 has fast links to both. Every
  // tensor is large, so the best order puts machine 1 in the middle.
  WeightedDag dag = chain(std::vector<double>(30, 1.0), 50.0);
  std::vector<Machine> m = {{"a", 1, 0, 1}, {"b", 1, 0, 1}, {"c", 1, 0, 1}};
  std::vector<std::vector<double>> bw = {{0, 100, 1}, {100, 0, 100}, {1, 100, 0}};
  auto got = choose_machine_order(dag, m, bw);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(got->order[1], 1);
  Pipeline slow = pipeline_of({1, 1, 1}, 0);
  slow.link_bandwidth = {100, 1};  // b, a, c: the second boundary crosses the slow link
  auto worse = partition_dag(dag, slow);
  ASSERT_TRUE(worse.ok());
  EXPECT_LT(got->partition.bottleneck, worse->bottleneck / 2);
  expect_valid(dag, pipeline_of({1, 1, 1}, 100), got->partition);
}

TEST(DagPartition, RejectsBackwardEdgesAndEmptyStages) {
  WeightedDag dag = chain({1, 1, 1}, 1);
  Pipeline p = pipeline_of({1, 1}, 0);
  auto back = evaluate_partition(dag, p, {0, 1, 0});
  ASSERT_FALSE(back.ok());
  EXPECT_NE(back.status().message().find("pipeline order"), std::string::npos);
  auto empty = evaluate_partition(dag, p, {0, 0, 0});
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("stage 1 has no node"), std::string::npos);
}

}  // namespace
}  // namespace ravnest::part
