// Cluster formation groups machines by speed, leaves out (with a reason) machines
// that cannot hold their share, honours fixed counts, and is deterministic.
#include <gtest/gtest.h>

#include <algorithm>

#include "partitioner/clusters.h"

namespace ravnest::part {
namespace {

DeviceProfile machine(const std::string& id, double gflops, int64_t memory) {
  DeviceProfile d;
  d.id = id;
  d.address = id + ":29500";
  d.cores = 4;
  d.gemm_gflops = gflops;
  d.conv_gflops = gflops;
  d.memory_bandwidth_gbps = gflops / 10;
  d.memory_bytes = memory;
  return d;
}

// A model of 1 GFLOP of conv work per micro-batch, 100 MB of parameters.
ModelTotals model() {
  ModelTotals m;
  m.flops[0] = 1e9;
  m.bytes = 1e8;
  m.param_bytes = 1e8;
  m.activation_bytes = 5e7;
  m.boundary_bytes = 1e5;
  return m;
}

ClusterOptions options() {
  ClusterOptions o;
  o.memory.microbatches = 8;
  o.average_every = 10;
  o.largest_op_fraction = 0.05;
  return o;
}

// Fast machines: 5 ms per micro-batch of the model; slow: 20 ms. With 130 MB each,
// a machine holds its share only in a pipeline of 4+ equally fast machines
// (3 x 1e8 / 4 + 5e7 / 4 x 4 = 125 MB on the first stage), so clusters must be
// long pipelines; which machines share one is what the test checks.
constexpr int64_t kTight = 130'000'000;
constexpr int64_t kRoomy = int64_t{8} << 30;

DeviceSet fast_and_slow(int64_t memory = kTight) {
  DeviceSet set;
  // Interleaved ids so that sorting by id alone would mix them.
  for (int i = 0; i < 4; ++i) {
    set.devices.push_back(machine("m" + std::to_string(2 * i), 400, memory));
    set.devices.push_back(machine("m" + std::to_string(2 * i + 1), 100, memory));
  }
  for (size_t a = 0; a < set.devices.size(); ++a)
    for (size_t b = a + 1; b < set.devices.size(); ++b)
      set.links.push_back({set.devices[a].id, set.devices[b].id, 10e9, 1e-4});
  return set;
}

std::vector<std::string> ids(const DeviceSet& set, const Cluster& c) {
  std::vector<std::string> out;
  for (size_t m : c.machines) out.push_back(set.devices[m].id);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Clusters, FourFastAndFourSlowFormTwoClustersBySpeed) {
  DeviceSet set = fast_and_slow();
  auto plan = form_clusters(set, model(), options());
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_EQ(plan->clusters.size(), 2u) << plan->explanation;
  EXPECT_EQ(ids(set, plan->clusters[0]), (std::vector<std::string>{"m0", "m2", "m4", "m6"})) << plan->explanation;
  EXPECT_EQ(ids(set, plan->clusters[1]), (std::vector<std::string>{"m1", "m3", "m5", "m7"})) << plan->explanation;
  EXPECT_TRUE(plan->left_out.empty());
  EXPECT_GT(plan->clusters[0].samples_per_s, plan->clusters[1].samples_per_s);
  EXPECT_GT(plan->averaging_s, 0);
  EXPECT_NE(plan->explanation.find("cluster 1: "), std::string::npos);
}

TEST(Clusters, IsDeterministic) {
  DeviceSet set = fast_and_slow();
  auto a = form_clusters(set, model(), options());
  DeviceSet reversed = set;
  std::reverse(reversed.devices.begin(), reversed.devices.end());
  auto b = form_clusters(set, model(), options());
  auto c = form_clusters(reversed, model(), options());
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->explanation, b->explanation);
  // Device order in the file does not change the grouping.
  ASSERT_EQ(a->clusters.size(), c->clusters.size());
  for (size_t i = 0; i < a->clusters.size(); ++i) EXPECT_EQ(ids(set, a->clusters[i]), ids(reversed, c->clusters[i]));
}

TEST(Clusters, MachineTooSmallForAnyShareIsLeftOutWithReason) {
  DeviceSet set;
  for (int i = 0; i < 4; ++i) set.devices.push_back(machine("big" + std::to_string(i), 200, kRoomy));
  set.devices.push_back(machine("tiny", 400, int64_t{1} << 20));  // fastest, 1 MiB
  for (size_t a = 0; a < set.devices.size(); ++a)
    for (size_t b = a + 1; b < set.devices.size(); ++b)
      set.links.push_back({set.devices[a].id, set.devices[b].id, 10e9, 1e-4});
  auto plan = form_clusters(set, model(), options());
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_EQ(plan->left_out.size(), 1u) << plan->explanation;
  EXPECT_EQ(set.devices[plan->left_out[0].machine].id, "tiny");
  EXPECT_NE(plan->left_out[0].reason.find("memory"), std::string::npos) << plan->left_out[0].reason;
  EXPECT_NE(plan->explanation.find("left out: tiny: memory"), std::string::npos) << plan->explanation;
  for (const Cluster& c : plan->clusters)
    for (size_t m : c.machines) EXPECT_NE(set.devices[m].id, "tiny");
}

TEST(Clusters, FixedCountsAreHonoured) {
  DeviceSet set = fast_and_slow(kRoomy);
  ClusterOptions o = options();
  o.clusters = 1;
  auto one = form_clusters(set, model(), o);
  ASSERT_TRUE(one.ok()) << one.status().message();
  EXPECT_EQ(one->clusters.size(), 1u);
  o.clusters = 0;
  o.stages_per_cluster = 2;
  auto pairs = form_clusters(set, model(), o);
  ASSERT_TRUE(pairs.ok()) << pairs.status().message();
  ASSERT_FALSE(pairs->clusters.empty());
  for (const Cluster& c : pairs->clusters) EXPECT_EQ(c.machines.size(), 2u);
}

TEST(Clusters, BackupsStayOutAndNothingFitsIsAnError) {
  DeviceSet set = fast_and_slow(kRoomy);
  set.devices[0].role = DeviceRole::kBackup;
  auto plan = form_clusters(set, model(), options());
  ASSERT_TRUE(plan.ok());
  bool found = false;
  for (const LeftOut& l : plan->left_out)
    if (l.machine == 0) found = l.reason.find("backup") != std::string::npos;
  EXPECT_TRUE(found) << plan->explanation;

  DeviceSet small;
  small.devices.push_back(machine("a", 100, 1000));
  small.devices.push_back(machine("b", 100, 1000));
  auto none = form_clusters(small, model(), options());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kResourceExhausted);
  EXPECT_NE(none.status().message().find("short by"), std::string::npos) << none.status().message();
}

TEST(Clusters, SlowLinksKeepMachinesApart) {
  // Two equally fast pairs; the pairs are joined by a slow link: two clusters of
  // two (averaging is rare) beat one pipeline of four across the slow link.
  DeviceSet set;
  for (const char* id : {"a", "b", "c", "d"}) set.devices.push_back(machine(id, 200, kRoomy));
  set.links = {{"a", "b", 10e9, 1e-4}, {"c", "d", 10e9, 1e-4}, {"a", "c", 10e6, 0.05},
               {"a", "d", 10e6, 0.05}, {"b", "c", 10e6, 0.05}, {"b", "d", 10e6, 0.05}};
  ClusterOptions o = options();
  o.average_every = 1000;
  auto plan = form_clusters(set, model(), o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  for (const Cluster& c : plan->clusters) {
    for (size_t i = 0; i + 1 < c.machines.size(); ++i)
      EXPECT_NE(set.link_between(c.machines[i], c.machines[i + 1], default_link()).bandwidth_bps, 10e6)
          << plan->explanation;
  }
}

}  // namespace
}  // namespace ravnest::part
