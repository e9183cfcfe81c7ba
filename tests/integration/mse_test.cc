// `ravnestc compile --loss mse` end to end (ravnestc compile + ravnest-launch on
// loopback): the CNN trained on fashion-mnist against one-hot labels with the
// appended ai.ravnest.MseLoss learns, and a 2-stage pipeline of real processes
// gives the loss of one process at every step. A model with its own loss is
// refused with the compiler's message, and an unknown --loss is a usage error.
#include <gtest/gtest.h>

#include <cmath>

#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;

constexpr int kSteps = 20;

// Per-step losses of `stages` real processes training cnn.onnx with the MSE loss.
std::vector<double> train_mse(const std::string& name, int stages) {
  std::string dir = testing::temp_dir(name);
  auto c = run_process({binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir, "--stages",
                        std::to_string(stages), "--loss", "mse", "--batch", "32", "--microbatches", "2", "--steps",
                        std::to_string(kSteps), "--lr", "0.1", "--momentum", "0.9", "--no-eval", "--seed", "7"},
                       120);
  EXPECT_EQ(c.exit_code, 0) << c.err << c.out;
  auto r = run_process({binary("ravnest-launch"), dir, "--quiet", "--losses", dir + "/losses.txt", "--timeout", "120"},
                       180, {"OMP_NUM_THREADS=1"});
  EXPECT_EQ(r.exit_code, 0) << name << ":\n" << r.err << r.out;
  return testing::read_losses(dir + "/losses.txt");
}

TEST(MseLoss, TwoStagesEqualOneStageAndTheLossFalls) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::vector<double> one = train_mse("mse1", 1), two = train_mse("mse2", 2);
  ASSERT_EQ(one.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(two.size(), static_cast<size_t>(kSteps));
  for (size_t i = 0; i < one.size(); ++i)
    EXPECT_NEAR(two[i], one[i], 1e-5 * std::abs(one[i])) << "step " << i + 1;
  // It learns: the mean loss of the last 5 steps is well below that of the first 5.
  double first = 0, last = 0;
  for (size_t i = 0; i < 5; ++i) {
    first += one[i];
    last += one[one.size() - 5 + i];
  }
  EXPECT_GT(first, 0.0);
  EXPECT_LT(last, 0.9 * first) << "first 5 steps: " << first / 5 << ", last 5: " << last / 5;
}

TEST(MseLoss, ModelWithItsOwnLossIsRefused) {
  std::string dir = testing::temp_dir("mse_own_loss");
  auto c = run_process({binary("ravnestc"), "compile", source_path("models/resnet50/resnet50_small.onnx"), "-o", dir,
                        "--loss", "mse", "--batch", "8"},
                       120);
  EXPECT_EQ(c.exit_code, 1) << c.err << c.out;
  EXPECT_NE(c.err.find("ravnestc: error: --loss mse appends a loss to a model that ends in logits, but this model "
                       "computes its own loss"),
            std::string::npos)
      << c.err;
  auto bad = run_process({binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir, "--loss", "l1"},
                         60);
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find("--loss needs ce (softmax cross-entropy) or mse (mean squared error)"), std::string::npos)
      << bad.err;
}

}  // namespace
}  // namespace ravnest
