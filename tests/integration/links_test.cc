// ravnest-launch --links: the 2-stage CNN trains 3 steps with its pipeline link
// running through an emulated 200 Mbit/s, 5 ms-per-node home link (the relay in
// the launcher), and the tensors really cross the relay both ways. A links file
// that names a node the run does not have fails before any node starts.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;

std::string compile_cnn(const std::string& name) {
  std::string dir = testing::temp_dir(name);
  auto r = run_process({binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir, "--stages", "2",
                        "--batch", "32", "--microbatches", "2", "--steps", "3", "--no-eval"},
                       120);
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
  return dir;
}

std::string write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

TEST(Links, TwoStagesTrainThroughAnEmulatedHomeLink) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile_cnn("links");
  std::string links =
      write_file(dir + "/links.json", R"({"default": {"up_mbit": 200, "down_mbit": 200, "delay_ms": 5, "loss": 0}})");
  auto r =
      run_process({binary("ravnest-launch"), dir, "--links", links, "--timeout", "120"}, 180, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  // The launcher announces the link and, at the end, the bytes it carried.
  EXPECT_NE(r.out.find("link node0 -> node1 via 127.0.0.1:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("forward 200 Mbit/s, 10 ms, loss 0%"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done: 3 steps"), std::string::npos) << r.out;
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(r.out, m, std::regex(R"(link node0 -> node1: (\d+) bytes forward, (\d+) bytes backward)")))
      << r.out;
  // 3 steps x 2 microbatches of 32 activations forward and as many gradients back: well over 100 KB each way.
  EXPECT_GT(std::stoll(m[1]), 100000) << r.out;
  EXPECT_GT(std::stoll(m[2]), 100000) << r.out;
}

TEST(Links, UnknownNodeFailsBeforeStarting) {
  std::string dir = compile_cnn("links-bad");
  std::string links = write_file(dir + "/links.json", R"({"default": {"up_mbit": 10, "down_mbit": 10, "delay_ms": 5},
                                                          "nodes": {"node9": {"up_mbit": 1}}})");
  auto r = run_process({binary("ravnest-launch"), dir, "--links", links, "--timeout", "60"}, 90);
  EXPECT_EQ(r.exit_code, 1) << r.err << r.out;
  EXPECT_NE(r.err.find("nodes.node9: unknown node"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace ravnest
