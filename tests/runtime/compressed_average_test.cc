// Compressed parameter averaging (top-k deltas with error feedback, ring
// all-gather) with members as threads over the real transport on loopback.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <thread>

#include "runtime/collectives/compressed_average.h"
#include "runtime/collectives/ring_connect.h"

namespace ravnest::rt {
namespace {

Deadline soon() { return deadline_after(std::chrono::seconds(10)); }

// Runs one round on every member at once; returns each member's result.
std::vector<std::vector<float>> round_all(std::vector<CompressedAverage>& members,
                                          std::vector<std::vector<float>> xs, const std::vector<double>& weights) {
  std::vector<std::thread> threads;
  std::vector<Status> status(members.size());
  for (size_t r = 0; r < members.size(); ++r)
    threads.emplace_back([&, r] { status[r] = members[r].run(xs[r], weights[r], soon()); });
  for (auto& t : threads) t.join();
  for (const auto& st : status) EXPECT_TRUE(st.ok()) << st.to_string();
  return xs;
}

struct Fixture {
  std::vector<std::unique_ptr<Transport>> transports;
  std::vector<CompressedAverage> members;
  Fixture(size_t n, const std::string& codec, const std::vector<float>& anchor) {
    std::vector<std::string> ids;
    for (size_t i = 0; i < n; ++i) ids.push_back("m" + std::to_string(i));
    auto ring = make_loopback_ring(ids, "compressed-test", soon());
    EXPECT_TRUE(ring.ok()) << ring.status().to_string();
    transports = std::move(ring).value();
    for (size_t r = 0; r < n; ++r) {
      auto c = CompressedAverage::create(*transports[r], ids, r, 7, parse_codec_spec(codec).value(), anchor);
      EXPECT_TRUE(c.ok());
      members.push_back(std::move(c).value());
    }
  }
};

// Keeping every entry, a round is the exact weighted mean.
TEST(CompressedAverage, KeepingEverythingIsTheWeightedMean) {
  const size_t n = 3, size = 101;
  std::vector<float> anchor(size, 0.5f);
  Fixture f(n, "topk:1.0", anchor);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  std::vector<std::vector<float>> xs(n, std::vector<float>(size));
  for (auto& x : xs)
    for (auto& v : x) v = dist(rng);
  std::vector<double> w{1, 2, 5};
  auto out = round_all(f.members, xs, w);
  for (size_t j = 0; j < size; ++j) {
    double want = (1 * xs[0][j] + 2 * xs[1][j] + 5 * xs[2][j]) / 8.0;
    for (size_t r = 0; r < n; ++r) EXPECT_NEAR(out[r][j], want, 1e-5) << "member " << r << " element " << j;
  }
}

// With top-k, every member ends every round with bit-identical values and
// sends only its share; error feedback keeps the dropped progress, so local
// SGD-like steps towards each member's target still bring the agreed model to
// the mean of the targets.
TEST(CompressedAverage, TopKIsIdenticalEverywhereAndConvergesWithErrorFeedback) {
  const size_t n = 3, size = 1000;
  std::vector<float> anchor(size, 0.0f);
  Fixture f(n, "topk:0.05", anchor);
  std::mt19937 rng(2);
  std::normal_distribution<float> dist;
  std::vector<std::vector<float>> targets(n, std::vector<float>(size));
  for (auto& x : targets)
    for (auto& v : x) v = dist(rng);
  std::vector<float> agreed = anchor;
  auto error_to_mean = [&](const std::vector<float>& x) {
    double err = 0;
    for (size_t j = 0; j < size; ++j)
      err = std::max(err, std::abs(x[j] - (targets[0][j] + targets[1][j] + targets[2][j]) / 3.0));
    return err;
  };
  const double first_error = error_to_mean(agreed);
  for (int round = 0; round < 400; ++round) {
    // Local progress from the agreed model: a small step (like SGD) towards the
    // member's target; error feedback re-sends what top-k dropped.
    std::vector<std::vector<float>> xs(n, agreed);
    for (size_t r = 0; r < n; ++r)
      for (size_t j = 0; j < size; ++j) xs[r][j] += 0.02f * (targets[r][j] - agreed[j]);
    auto out = round_all(f.members, xs, {1, 1, 1});
    for (size_t r = 1; r < n; ++r) ASSERT_EQ(out[r], out[0]) << "round " << round;
    agreed = out[0];
    // (n-1) blocks of [8-byte weight][k (index, value) pairs] per round.
    EXPECT_LE(f.members[0].bytes_sent(), (n - 1) * (8 + topk_count(size, 0.05) * 8 + 64)) << "round " << round;
  }
  EXPECT_LT(error_to_mean(agreed), 0.1 * first_error);
}

}  // namespace
}  // namespace ravnest::rt
