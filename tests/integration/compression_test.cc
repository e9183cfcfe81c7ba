// Compressed pipeline traffic end to end: the CNN in 2 stages (two ravnest-rt
// processes on loopback) trains with compressed activations and gradients, and the
// "done" events report the bytes written against what raw frames would have taken.
#include <gtest/gtest.h>

#include <fstream>
#include <numeric>
#include <sstream>

#include "common/json.h"
#include "common/ports.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::source_path;

struct Bytes {
  double act = 0, act_raw = 0, grad = 0, grad_raw = 0;
};

struct RunResult {
  std::vector<double> losses;
  Bytes node0, node1;  // from each node's "done" event
};

Bytes done_bytes(const std::string& out) {
  Bytes b;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("\"event\":\"done\"") == std::string::npos) continue;
    Result<Json> j = parse_json(line);
    EXPECT_TRUE(j.ok()) << line;
    if (!j.ok()) break;
    b.act = static_cast<double>(j->get_int("bytes_act").value());
    b.act_raw = static_cast<double>(j->get_int("bytes_act_raw").value());
    b.grad = static_cast<double>(j->get_int("bytes_grad").value());
    b.grad_raw = static_cast<double>(j->get_int("bytes_grad_raw").value());
  }
  return b;
}

// Compiles the CNN in 2 stages for 30 steps with `flags` and runs both stages.
RunResult train(const std::string& name, const std::vector<std::string>& flags) {
  RunResult result;
  std::string dir = testing::temp_dir(name);
  std::vector<std::string> args{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir,
                                "--stages", "2", "--batch", "32", "--microbatches", "4", "--steps", "30",
                                "--no-eval", "--seed", "7"};
  args.insert(args.end(), flags.begin(), flags.end());
  auto c = testing::run_process(args, 120);
  EXPECT_EQ(c.exit_code, 0) << c.err << c.out;
  if (c.exit_code != 0) return result;
  const std::string a0 = "127.0.0.1:" + std::to_string(free_loopback_port());
  const std::string a1 = "127.0.0.1:" + std::to_string(free_loopback_port());
  const std::string losses = dir + "/losses.txt";
  testing::Process node1({binary("ravnest-rt"), "--bundle", dir + "/node1", "--listen", a1, "--peer", "node0=" + a0,
                          "--losses", losses, "--recv-timeout", "120"},
                         {"OMP_NUM_THREADS=1"});
  testing::Process node0({binary("ravnest-rt"), "--bundle", dir + "/node0", "--listen", a0, "--peer", "node1=" + a1,
                          "--recv-timeout", "120"},
                         {"OMP_NUM_THREADS=1"});
  auto r0 = node0.wait(300);
  auto r1 = node1.wait(60);
  EXPECT_EQ(r0.exit_code, 0) << name << " node0:\n" << r0.err;
  EXPECT_EQ(r1.exit_code, 0) << name << " node1:\n" << r1.err;
  result.node0 = done_bytes(r0.out);
  result.node1 = done_bytes(r1.out);
  std::ifstream in(losses);
  long long step;
  double loss;
  while (in >> step >> loss) result.losses.push_back(loss);
  return result;
}

double mean_last(const std::vector<double>& v, size_t k) {
  return std::accumulate(v.end() - static_cast<std::ptrdiff_t>(k), v.end(), 0.0) / static_cast<double>(k);
}

TEST(Compression, CompressedPipelineTrainsAndCountsBytes) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  RunResult raw = train("compress-none", {});
  RunResult half = train("compress-fp16", {"--compress-activations", "fp16", "--compress-gradients", "fp16"});
  RunResult small = train("compress-int8-topk", {"--compress-activations", "int8", "--compress-gradients", "topk:0.05"});
  for (const RunResult* r : {&raw, &half, &small}) ASSERT_EQ(r->losses.size(), 30u);

  // Uncompressed: bytes as written equal the raw count; node0 sends activations, node1 gradients.
  EXPECT_GT(raw.node0.act, 0);
  EXPECT_EQ(raw.node0.act, raw.node0.act_raw);
  EXPECT_EQ(raw.node1.grad, raw.node1.grad_raw);
  EXPECT_EQ(raw.node0.grad, 0);
  EXPECT_EQ(half.node0.act_raw, raw.node0.act_raw) << "the same frames, counted raw";

  // fp16: half the bytes (plus headers), and the same learning within a few percent.
  EXPECT_NEAR(half.node0.act / half.node0.act_raw, 0.5, 0.02);
  EXPECT_NEAR(half.node1.grad / half.node1.grad_raw, 0.5, 0.02);
  EXPECT_LT(mean_last(half.losses, 5), half.losses[0] * 0.8);
  EXPECT_NEAR(mean_last(half.losses, 5), mean_last(raw.losses, 5), 0.03 * mean_last(raw.losses, 5));

  // int8 activations: about a quarter; top-k 5% gradients: at most an eighth. It still learns.
  EXPECT_NEAR(small.node0.act / small.node0.act_raw, 0.25, 0.02);
  EXPECT_LE(small.node1.grad / small.node1.grad_raw, 1.0 / 8);
  EXPECT_LT(mean_last(small.losses, 5), small.losses[0] * 0.9);
}

TEST(Compression, UnknownCodecIsAClearError) {
  auto r = testing::run_process({binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o",
                                 testing::temp_dir("compress-bad"), "--compress-gradients", "zstd"},
                                60);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--compress-gradients: unknown codec 'zstd'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace ravnest
