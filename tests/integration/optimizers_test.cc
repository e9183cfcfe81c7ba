// Optimizers, learning-rate schedules and global-norm clipping in real
// multi-process runs (ravnestc compile + ravnest-launch on loopback): a 2-stage
// pipeline gives the parameters of one process, for AdamW with a warm-up and
// cosine schedule, for LAMB, and with gradients clipped by the norm over both
// stages (which differs from the unclipped run).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>

#include "runtime/tensor_file.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;
using testing::relative_diff;

struct TrainedRun {
  std::map<std::string, rt::Tensor> params;  // every parameter of every node, by name
  std::vector<double> losses;                // per step
};

TrainedRun train(const std::string& name, int stages, const std::vector<std::string>& flags) {
  std::string dir = testing::temp_dir(name);
  std::vector<std::string> args{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir,
                                "--stages", std::to_string(stages), "--batch", "32", "--microbatches", "4",
                                "--no-eval", "--seed", "5"};
  args.insert(args.end(), flags.begin(), flags.end());
  auto c = run_process(args, 120);
  EXPECT_EQ(c.exit_code, 0) << c.err << c.out;
  auto r = run_process({binary("ravnest-launch"), dir, "--quiet", "--save-params", dir + "/params", "--losses",
                        dir + "/losses.txt", "--timeout", "240"},
                       300, {"OMP_NUM_THREADS=1"});
  EXPECT_EQ(r.exit_code, 0) << name << ":\n" << r.err << r.out;
  TrainedRun run;
  for (int s = 0; s < stages; ++s) {
    auto file = rt::read_tensor_file(dir + "/params/node" + std::to_string(s) + ".rvt");
    EXPECT_TRUE(file.ok()) << file.status().to_string();
    if (!file.ok()) continue;
    for (auto& [k, v] : *file) run.params[k] = v;
  }
  std::ifstream in(dir + "/losses.txt");
  long long step;
  double loss;
  while (in >> step >> loss) run.losses.push_back(loss);
  return run;
}

void expect_same_params(const TrainedRun& got, const TrainedRun& want, const std::string& what) {
  ASSERT_EQ(want.params.size(), 8u) << what;
  ASSERT_EQ(got.params.size(), want.params.size()) << what;
  for (const auto& [name, tensor] : want.params) {
    ASSERT_EQ(got.params.at(name).shape(), tensor.shape()) << what << ": " << name;
    EXPECT_LE(relative_diff(got.params.at(name), tensor), 1e-5) << what << ": parameter " << name;
  }
}

double max_param_diff(const TrainedRun& a, const TrainedRun& b) {
  double worst = 0;
  for (const auto& [name, tensor] : b.params) worst = std::max(worst, relative_diff(a.params.at(name), tensor));
  return worst;
}

TEST(Optimizers, AdamWWithWarmUpAndCosineTwoStagesEqualOneStage) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::vector<std::string> flags{"--steps", "30", "--optimizer", "adamw", "--lr", "0.002", "--weight-decay",
                                       "0.01", "--lr-schedule", "cosine", "--warmup-steps", "5", "--lr-min", "0.0002"};
  TrainedRun one = train("adamw1", 1, flags), two = train("adamw2", 2, flags);
  expect_same_params(two, one, "adamw");
  ASSERT_EQ(one.losses.size(), 30u);
  ASSERT_EQ(two.losses.size(), 30u);
  for (size_t i = 0; i < 30; ++i) EXPECT_NEAR(two.losses[i], one.losses[i], 1e-5 * std::abs(one.losses[i])) << i;
  // It learns: the mean loss of the last 5 steps is well below that of the first 5.
  double first = 0, last = 0;
  for (size_t i = 0; i < 5; ++i) {
    first += one.losses[i];
    last += one.losses[25 + i];
  }
  EXPECT_LT(last, 0.7 * first);
  // And it is not SGD: the same flags with --optimizer sgd end elsewhere.
  std::vector<std::string> sgd_flags = flags;
  sgd_flags[3] = "sgd";
  EXPECT_GT(max_param_diff(train("adamw_sgd", 1, sgd_flags), one), 1e-2);
}

TEST(Optimizers, LambTwoStagesEqualOneStage) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::vector<std::string> flags{"--steps", "15", "--optimizer", "lamb", "--lr", "0.01", "--weight-decay", "0.01",
                                       "--lr-schedule", "step", "--step-size", "5", "--gamma", "0.5"};
  TrainedRun one = train("lamb1", 1, flags), two = train("lamb2", 2, flags);
  expect_same_params(two, one, "lamb");
  ASSERT_EQ(one.losses.size(), 15u);
  EXPECT_LT(one.losses[14], one.losses[0]);
}

// The clipping norm spans both stages: clipping each stage by its own norm would
// give other parameters than the 1-stage run.
TEST(Optimizers, ClippingByTheGlobalNormTwoStagesEqualOneStage) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::vector<std::string> base{"--steps", "10", "--lr", "0.05", "--momentum", "0.9"};
  std::vector<std::string> clipped = base;
  clipped.insert(clipped.end(), {"--clip-norm", "0.2"});
  TrainedRun one = train("clip1", 1, clipped), two = train("clip2", 2, clipped);
  expect_same_params(two, one, "clipped");
  TrainedRun unclipped = train("noclip1", 1, base);
  EXPECT_GT(max_param_diff(unclipped, one), 1e-3) << "--clip-norm 0.2 changed nothing: the test does not clip";
}

}  // namespace
}  // namespace ravnest
