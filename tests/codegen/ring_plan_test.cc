// The averaging ring plan: segments at the union of the clusters' stage
// boundaries, one member per cluster, covering every parameter exactly once.
#include <gtest/gtest.h>

#include "codegen/ring_plan.h"

namespace ravnest::cg {
namespace {

TEST(RingPlan, CutsAtTheUnionOfStageBoundaries) {
  std::vector<std::pair<std::string, int64_t>> params{{"a", 10}, {"b", 5}, {"c", 7}, {"d", 3}};
  ClusterLayout two{{"n0", "n1"}, {{"a", "b"}, {"c", "d"}}};
  ClusterLayout three{{"n2", "n3", "n4"}, {{"a"}, {"b", "c"}, {"d"}}};
  auto rings = plan_rings(params, {two, three});
  ASSERT_TRUE(rings.ok()) << rings.status().to_string();
  // Boundaries: two at 15; three at 10 and 22 -> segments [0,10) [10,15) [15,22) [22,25).
  ASSERT_EQ(rings->size(), 4u);
  EXPECT_EQ((*rings)[0].members, (std::vector<std::string>{"n0", "n2"}));
  EXPECT_EQ((*rings)[1].members, (std::vector<std::string>{"n0", "n3"}));
  EXPECT_EQ((*rings)[2].members, (std::vector<std::string>{"n1", "n3"}));
  EXPECT_EQ((*rings)[3].members, (std::vector<std::string>{"n1", "n4"}));
  int64_t covered = 0;
  for (size_t i = 0; i < rings->size(); ++i) {
    EXPECT_EQ((*rings)[i].tag, i);
    covered += (*rings)[i].size();
  }
  EXPECT_EQ(covered, 25);
  ASSERT_EQ((*rings)[1].pieces.size(), 1u);
  EXPECT_EQ((*rings)[1].pieces[0].param, "b");
  EXPECT_EQ((*rings)[1].pieces[0].offset, 0);
  EXPECT_EQ((*rings)[1].pieces[0].length, 5);
}

TEST(RingPlan, IdenticalPartitionsGiveOneRingPerStage) {
  std::vector<std::pair<std::string, int64_t>> params{{"a", 4}, {"b", 4}};
  ClusterLayout x{{"n0", "n1"}, {{"a"}, {"b"}}};
  ClusterLayout y{{"n2", "n3"}, {{"a"}, {"b"}}};
  ClusterLayout z{{"n4", "n5"}, {{"a"}, {"b"}}};
  auto rings = plan_rings(params, {x, y, z});
  ASSERT_TRUE(rings.ok());
  ASSERT_EQ(rings->size(), 2u);
  EXPECT_EQ((*rings)[0].members, (std::vector<std::string>{"n0", "n2", "n4"}));
  EXPECT_EQ((*rings)[1].members, (std::vector<std::string>{"n1", "n3", "n5"}));
}

TEST(RingPlan, OutOfOrderStageIsAnError) {
  std::vector<std::pair<std::string, int64_t>> params{{"a", 4}, {"b", 4}};
  ClusterLayout bad{{"n0", "n1"}, {{"b"}, {"a"}}};
  auto rings = plan_rings(params, {bad});
  ASSERT_FALSE(rings.ok());
  EXPECT_NE(rings.status().message().find("out of the model's parameter order"), std::string::npos);
}

}  // namespace
}  // namespace ravnest::cg
