// Asynchronous mode: an update after every micro-batch, no pipeline flush,
// weight stashing.
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

struct TrainedRun {
  std::map<std::string, rt::Tensor> params;
  std::vector<double> losses;
};

TrainedRun train(const std::string& name, int stages, int batch, int microbatches, int steps, bool async) {
  std::string dir = testing::temp_dir(name);
  std::vector<std::string> args{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir,
                                "--stages", std::to_string(stages), "--batch", std::to_string(batch),
                                "--microbatches", std::to_string(microbatches), "--steps", std::to_string(steps),
                                "--no-eval", "--seed", "5"};
  if (async) args.push_back("--async");
  auto c = run_process(args, 120);
  EXPECT_EQ(c.exit_code, 0) << c.err;
  auto r = run_process({binary("ravnest-launch"), dir, "--quiet", "--save-params", dir + "/params", "--losses",
                        dir + "/losses.txt", "--timeout", "240"},
                       300, {"OMP_NUM_THREADS=1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  TrainedRun run;
  for (int s = 0; s < stages; ++s) {
    auto file = rt::read_tensor_file(dir + "/params/node" + std::to_string(s) + ".rvt");
    EXPECT_TRUE(file.ok()) << file.status().to_string();
    if (file.ok())
      for (auto& [k, v] : *file) run.params[k] = v;
  }
  std::ifstream in(dir + "/losses.txt");
  long long step;
  double loss;
  while (in >> step >> loss) run.losses.push_back(loss);
  return run;
}

// Largest per-tensor max|a-b| / max|b|.
double max_relative_difference(const TrainedRun& a, const TrainedRun& b) {
  double worst = 0;
  for (const auto& [name, want] : b.params) {
    const rt::Tensor& have = a.params.at(name);
    double diff = 0, ref = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(have.data<float>()[i] - want.data<float>()[i])));
      ref = std::max(ref, static_cast<double>(std::abs(want.data<float>()[i])));
    }
    worst = std::max(worst, diff / ref);
  }
  return worst;
}

// With one stage nothing is in flight: asynchronous mode is plain SGD with one
// update per micro-batch, i.e. synchronous training at the micro-batch size
// (the sample order is the same: micro-batch g of the async run covers the
// same samples as step g of the sync run).
TEST(Async, OneStageIsSgdPerMicrobatch) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TrainedRun async = train("async1", 1, 32, 4, 10, true);
  TrainedRun sync = train("sync1", 1, 8, 1, 40, false);
  ASSERT_EQ(async.params.size(), 8u);
  ASSERT_EQ(sync.params.size(), 8u);
  EXPECT_LE(max_relative_difference(async, sync), 1e-5);
}

// Several stages: deterministic (a static stream), learning, and really
// asynchronous (stale weights make it differ from synchronous training).
TEST(Async, ThreeStagesAreDeterministicLearnAndDifferFromSync) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TrainedRun a = train("async3a", 3, 32, 4, 30, true);
  TrainedRun b = train("async3b", 3, 32, 4, 30, true);
  ASSERT_EQ(a.params.size(), 8u);
  ASSERT_EQ(b.params.size(), 8u);
  EXPECT_EQ(max_relative_difference(a, b), 0.0);
  ASSERT_EQ(a.losses.size(), 30u);
  double first = (a.losses[0] + a.losses[1] + a.losses[2]) / 3, last = (a.losses[27] + a.losses[28] + a.losses[29]) / 3;
  EXPECT_LT(last, 0.8 * first);
  TrainedRun sync = train("sync3", 3, 8, 1, 120, false);
  EXPECT_GT(max_relative_difference(a, sync), 1e-4);
}

}  // namespace
}  // namespace ravnest
