// The contiguous splitter is exact: its bottleneck equals brute force's.
#include <gtest/gtest.h>

#include <limits>
#include <random>

#include "partitioner/contiguous.h"

namespace ravnest::part {
namespace {

// Minimal bottleneck over every way to cut n items into k non-empty runs.
double brute_force(const std::vector<double>& cost, const std::vector<double>& speed, size_t first, size_t stage) {
  const size_t k = speed.size();
  if (stage + 1 == k) {
    double sum = 0;
    for (size_t i = first; i < cost.size(); ++i) sum += cost[i];
    return sum / speed[stage];
  }
  double best = std::numeric_limits<double>::infinity();
  double sum = 0;
  for (size_t end = first + 1; end + (k - stage - 1) <= cost.size(); ++end) {
    sum += cost[end - 1];
    best = std::min(best, std::max(sum / speed[stage], brute_force(cost, speed, end, stage + 1)));
  }
  return best;
}

TEST(Contiguous, MatchesBruteForce) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> cost_dist(0.0, 10.0), speed_dist(0.5, 4.0);
  for (int trial = 0; trial < 200; ++trial) {
    size_t n = 1 + rng() % 12, k = 1 + rng() % std::min<size_t>(n, 5);
    std::vector<double> cost(n), speed(k);
    for (auto& c : cost) c = cost_dist(rng);
    for (auto& s : speed) s = speed_dist(rng);
    auto split = split_contiguous(cost, speed);
    ASSERT_TRUE(split.ok());
    EXPECT_NEAR(split->bottleneck, brute_force(cost, speed, 0, 0), 1e-9);
    // Stages are contiguous, non-empty and in order.
    for (size_t i = 1; i < n; ++i) EXPECT_LE(split->stage_of_node[i] - split->stage_of_node[i - 1], 1);
    EXPECT_EQ(split->stage_of_node.front(), 0);
    EXPECT_EQ(split->stage_of_node.back(), static_cast<int>(k - 1));
  }
}

TEST(Contiguous, FasterMachineGetsMoreWork) {
  auto split = split_contiguous(std::vector<double>(30, 1.0), {1.0, 2.0});
  ASSERT_TRUE(split.ok());
  int first = 0;
  for (int s : split->stage_of_node) first += s == 0;
  EXPECT_EQ(first, 10);  // 10 / 1 == 20 / 2
}

TEST(Contiguous, TooManyStagesIsAnError) {
  auto split = split_contiguous({1, 2}, {1, 1, 1});
  ASSERT_FALSE(split.ok());
  EXPECT_NE(split.status().message().find("cannot split 2 nodes into 3 stages"), std::string::npos);
}

}  // namespace
}  // namespace ravnest::part
