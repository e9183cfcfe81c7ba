// Link faults with the project's link emulation (ravnest-launch --links,
// docs/links.md): a pipeline link cut for 10 s and then restored, and a link
// losing 5% of its packets. A synchronous run over either completes, and ends
// with exactly the parameters of the same run on plain loopback: the faults cost
// time, never training state.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "runtime/tensor_file.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;

std::string compile(const std::string& name, int steps) {
  std::string dir = testing::temp_dir(name);
  auto r = run_process({binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir, "--stages", "2",
                        "--batch", "32", "--microbatches", "2", "--steps", std::to_string(steps), "--no-eval"},
                       120);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir;
}

std::map<std::string, rt::Tensor> load(const std::string& dir) {
  std::map<std::string, rt::Tensor> params;
  for (const char* node : {"node0", "node1"}) {
    auto file = rt::read_tensor_file(dir + "/" + node + ".rvt");
    EXPECT_TRUE(file.ok()) << file.status().to_string();
    if (file.ok())
      for (auto& [k, v] : *file) params[k] = v;
  }
  return params;
}

// Runs `bundles` with the links file `links_json` ("" for plain loopback) and returns the final parameters.
std::map<std::string, rt::Tensor> run(const std::string& bundles, const std::string& tag,
                                      const std::string& links_json, std::string* out = nullptr) {
  std::vector<std::string> argv{binary("ravnest-launch"), bundles, "--save-params", bundles + "/params-" + tag,
                                "--timeout", "240"};
  if (!links_json.empty()) {
    const std::string path = bundles + "/links-" + tag + ".json";
    std::ofstream(path) << links_json;
    argv.insert(argv.end(), {"--links", path});
  }
  auto r = run_process(argv, 300, {"OMP_NUM_THREADS=1"});
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
  if (out) *out = r.out;
  return load(bundles + "/params-" + tag);
}

void expect_identical(const std::map<std::string, rt::Tensor>& a, const std::map<std::string, rt::Tensor>& b) {
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), a.size());
  for (const auto& [name, t] : a) {
    ASSERT_EQ(b.at(name).shape(), t.shape()) << name;
    EXPECT_EQ(std::memcmp(b.at(name).raw(), t.raw(), t.bytes()), 0) << name << " differs";
  }
}

// node1's access link goes down 4 s after the launcher starts, for 10 s: whatever is
// in flight then waits (frames are held, connections stay up, every receive deadline
// is 120 s), and the run goes on when the link is back.
TEST(LinkFaults, LinkCutForTenSecondsThenRestored) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  // 400 steps: about 7 s on loopback here, so the cut at 4 s lands mid-run (start-up takes 1-2 s).
  const std::string bundles = compile("link-cut", 400);
  const auto plain = run(bundles, "plain", "");
  std::string out;
  const auto t0 = std::chrono::steady_clock::now();
  const auto cut = run(bundles, "cut", R"({"default": {"up_mbit": 1000, "down_mbit": 1000, "delay_ms": 1},
                                          "nodes": {"node1": {"changes": [{"at_s": 4, "for_s": 10, "down": true}]}}})",
                       &out);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("run over a link cut from 4 s to 14 s took %.1f s\n", seconds);
  EXPECT_NE(out.find("down from 4 s for 10 s"), std::string::npos) << out;
  EXPECT_GE(seconds, 14.0) << "the run ended before the link came back: the cut did not hit it";
  expect_identical(plain, cut);
}

// 5% packet loss on node1's access link (each lost segment delays its chunk by a
// retransmission timeout, as TCP would).
TEST(LinkFaults, FivePercentPacketLoss) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::string bundles = compile("link-loss", 6);
  const auto plain = run(bundles, "plain", "");
  std::string out;
  const auto lossy = run(bundles, "loss", R"({"default": {"up_mbit": 1000, "down_mbit": 1000, "delay_ms": 1},
                                             "nodes": {"node1": {"loss": 0.05}}})",
                         &out);
  // The launcher's per-link summary: some chunks were lost (and retransmitted) on the way.
  int64_t lost = 0;
  const std::regex counted(R"(([0-9]+) chunk\(s\) delayed by loss)");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), counted); it != std::sregex_iterator(); ++it)
    lost += std::stoll((*it)[1]);
  EXPECT_GT(lost, 0) << out;
  expect_identical(plain, lossy);
}

}  // namespace
}  // namespace ravnest
