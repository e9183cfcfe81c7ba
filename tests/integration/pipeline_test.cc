// Multi-process pipeline runs on loopback with the real programs:
// ravnestc compile + ravnest-launch (which runs one ravnest-rt per stage).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;
using testing::read_losses;

std::string compile(const std::string& name, int stages, const std::vector<std::string>& extra) {
  std::string dir = testing::temp_dir(name);
  std::vector<std::string> args{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir,
                                "--stages", std::to_string(stages)};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = run_process(args, 120);
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
  return dir;
}

// 30 SGD steps give the same losses, step by step, whether the model runs in
// one process or split over 2 or 3 processes exchanging tensors over TCP.
TEST(Pipeline, SameLossesWithOneTwoThreeStages) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::vector<std::vector<double>> runs;
  for (int stages : {1, 2, 3}) {
    std::string dir = compile("pipe" + std::to_string(stages), stages,
                              {"--batch", "32", "--microbatches", "4", "--steps", "30", "--no-eval", "--seed", "7"});
    std::string losses = dir + "/losses.txt";
    auto r = run_process({binary("ravnest-launch"), dir, "--losses", losses, "--quiet", "--timeout", "240"}, 300,
                         {"OMP_NUM_THREADS=1"});
    ASSERT_EQ(r.exit_code, 0) << "stages=" << stages << "\n" << r.err << r.out;
    runs.push_back(read_losses(losses));
    ASSERT_EQ(runs.back().size(), 30u) << "stages=" << stages;
  }
  for (size_t i = 0; i < 30; ++i) {
    EXPECT_TRUE(std::isfinite(runs[0][i]));
    for (size_t k = 1; k < runs.size(); ++k)
      EXPECT_NEAR(runs[k][i], runs[0][i], 1e-5 * std::abs(runs[0][i])) << "step " << i << ", " << k + 1 << " stages";
  }
  // And it learns: the last losses are well below the first.
  EXPECT_LT(runs[0][29], runs[0][0] * 0.8);
}

// The foundation's bar: one epoch with 2 stages reaches >= 85% test accuracy.
TEST(Pipeline, OneEpochTwoStagesReaches85Percent) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile("epoch", 2, {"--batch", "64", "--microbatches", "4", "--lr", "0.01", "--momentum", "0.9"});
  auto r = run_process({binary("ravnest-launch"), dir, "--timeout", "900"}, 960);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(r.out, match, std::regex(R"(final epoch 1: test accuracy ([0-9.]+)%)"))) << r.out;
  double accuracy = std::stod(match[1]);
  RecordProperty("test_accuracy", match[1].str());
  EXPECT_GE(accuracy, 85.0) << r.out;
}

}  // namespace
}  // namespace ravnest
