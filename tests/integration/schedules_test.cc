// Whatever the schedule, synchronous training gives the parameters of one
// process on the whole batch: 4 stages as 4 processes on loopback, 10 steps
// with each schedule, against a 1-stage run.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "runtime/tensor_file.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;

// Every parameter of every node of a run, by name.
std::map<std::string, rt::Tensor> train(const std::string& name, int stages, const std::string& schedule) {
  std::string dir = testing::temp_dir(name);
  auto c = run_process({binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir, "--stages",
                        std::to_string(stages), "--batch", "32", "--microbatches", "8", "--steps", "10", "--no-eval",
                        "--schedule", schedule, "--seed", "3"},
                       120);
  EXPECT_EQ(c.exit_code, 0) << c.err;
  auto r = run_process({binary("ravnest-launch"), dir, "--quiet", "--save-params", dir + "/params", "--timeout", "240"},
                       300, {"OMP_NUM_THREADS=1"});
  EXPECT_EQ(r.exit_code, 0) << schedule << ":\n" << r.err;
  std::map<std::string, rt::Tensor> params;
  for (int s = 0; s < stages; ++s) {
    auto file = rt::read_tensor_file(dir + "/params/node" + std::to_string(s) + ".rvt");
    EXPECT_TRUE(file.ok()) << file.status().to_string();
    if (!file.ok()) continue;
    for (auto& [k, v] : *file) params[k] = v;
  }
  return params;
}

TEST(Schedules, EveryScheduleGivesTheSingleProcessParameters) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  auto reference = train("sched_ref", 1, "1f1b");
  ASSERT_EQ(reference.size(), 8u);
  for (const char* schedule : {"gpipe", "1f1b", "zb-h1", "zb-h2", "auto"}) {
    auto got = train(std::string("sched_") + schedule, 4, schedule);
    ASSERT_EQ(got.size(), reference.size()) << schedule;
    for (const auto& [name, want] : reference) {
      const rt::Tensor& have = got.at(name);
      ASSERT_EQ(have.shape(), want.shape()) << name;
      double max_diff = 0, max_ref = 0;
      for (int64_t i = 0; i < want.numel(); ++i) {
        max_diff = std::max(max_diff, static_cast<double>(std::abs(have.data<float>()[i] - want.data<float>()[i])));
        max_ref = std::max(max_ref, static_cast<double>(std::abs(want.data<float>()[i])));
      }
      EXPECT_LE(max_diff, 1e-5 * max_ref) << schedule << ": parameter " << name;
    }
  }
}

}  // namespace
}  // namespace ravnest
