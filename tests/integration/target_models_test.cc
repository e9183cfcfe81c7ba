// Every target model (the committed small variants of models/<name>/) trains
// for 20 steps in a 2-stage pipeline of real processes with its loss going
// down, and the 2-stage run equals the 1-stage run step by step (within 1e-5
// relative): the split, the boundary tensors and, for GPT-2, the tied
// embedding shared by the first and last stage change nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "runtime/tensor_file.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;
using testing::read_losses;

constexpr int kSteps = 20;

struct TrainedRun {
  std::vector<double> losses;
  std::string params_dir;
};

TrainedRun train(const std::string& model, int stages) {
  TrainedRun run;
  // BatchNorm needs more than a handful of samples per micro-batch to learn in 20 steps.
  const bool images = model == "resnet50" || model == "inception_v3";
  std::string dir = testing::temp_dir("zoo_" + model + "_" + std::to_string(stages));
  auto c = run_process({binary("ravnestc"), "compile", source_path("models/" + model + "/" + model + "_small.onnx"),
                        "-o", dir, "--stages", std::to_string(stages), "--batch", images ? "32" : "8", "--microbatches", "2",
                        "--steps", std::to_string(kSteps), "--no-eval", "--seed", "3", "--lr", "0.05"},
                       180);
  EXPECT_EQ(c.exit_code, 0) << c.err << c.out;
  if (c.exit_code != 0) return run;
  run.params_dir = dir + "/params";
  auto r = run_process({binary("ravnest-launch"), dir, "--losses", dir + "/losses.txt", "--save-params",
                        run.params_dir, "--quiet", "--timeout", "240"},
                       300, {"OMP_NUM_THREADS=1"});
  EXPECT_EQ(r.exit_code, 0) << model << ", " << stages << " stage(s)\n" << r.err << r.out;
  run.losses = read_losses(dir + "/losses.txt");
  return run;
}

// Every tensor of the saved parameters of a run, by name (a tied weight appears
// once per stage that holds it: those copies must be identical).
std::map<std::string, std::vector<rt::Tensor>> saved_params(const TrainedRun& run, int stages) {
  std::map<std::string, std::vector<rt::Tensor>> out;
  for (int s = 0; s < stages; ++s) {
    auto tensors = rt::read_tensor_file(run.params_dir + "/node" + std::to_string(s) + ".rvt");
    EXPECT_TRUE(tensors.ok()) << tensors.status().to_string();
    if (!tensors.ok()) continue;
    for (auto& [name, t] : *tensors) out[name].push_back(t);
  }
  return out;
}

class TargetModels : public ::testing::TestWithParam<std::string> {};

TEST_P(TargetModels, TwoStagesEqualOneStageAndLearn) {
  const std::string model = GetParam();
  if (model == "resnet50" || model == "inception_v3")
    if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TrainedRun one = train(model, 1);
  TrainedRun two = train(model, 2);
  ASSERT_EQ(one.losses.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(two.losses.size(), static_cast<size_t>(kSteps));
  for (int i = 0; i < kSteps; ++i) {
    ASSERT_TRUE(std::isfinite(one.losses[i])) << "step " << i;
    EXPECT_NEAR(two.losses[i], one.losses[i], 1e-5 * std::max(1.0, std::abs(one.losses[i]))) << "step " << i;
  }
  // Learning: the mean of the last 5 losses is well below the first 5's.
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) {
    first += one.losses[i];
    last += one.losses[kSteps - 1 - i];
  }
  EXPECT_LT(last, 0.9 * first) << model << ": first losses " << first / 5 << ", last " << last / 5;

  // Final parameters (and BatchNorm running statistics) agree; copies of a tied weight are identical.
  auto p1 = saved_params(one, 1);
  auto p2 = saved_params(two, 2);
  ASSERT_EQ(p1.size(), p2.size());
  for (const auto& [name, copies] : p2) {
    ASSERT_TRUE(p1.count(name)) << name;
    for (const rt::Tensor& t : copies) EXPECT_LE(testing::relative_diff(t, p1.at(name)[0]), 1e-5) << name;
    if (copies.size() > 1) {
      EXPECT_EQ(testing::relative_diff(copies[1], copies[0]), 0.0) << "tied weight " << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, TargetModels,
                         ::testing::Values("resnet50", "inception_v3", "bert", "gpt_sorter", "llama_block",
                                           "gpt2_small"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ravnest
