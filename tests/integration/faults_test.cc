// Bad bundles and dead peers give clear errors, not crashes or hangs.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>

#include "common/json.h"
#include "common/ports.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

namespace fs = std::filesystem;
using testing::binary;
using testing::run_process;
using testing::source_path;

std::string compile_two_stages(const std::string& name, const std::vector<std::string>& extra = {}) {
  std::string dir = testing::temp_dir(name);
  std::vector<std::string> args{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir,
                                "--stages", "2", "--batch", "32", "--microbatches", "2", "--no-eval"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = run_process(args, 120);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir;
}

void flip_byte(const std::string& path, std::streamoff offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x5a));
}

TEST(Faults, CorruptWeightsFileIsRefusedNamingTheFile) {
  std::string dir = compile_two_stages("corrupt");
  flip_byte(dir + "/node0/weights.rvt", 200);
  auto r = run_process({binary("ravnest-rt"), "--bundle", dir + "/node0"}, 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("weights.rvt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("corrupt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("SHA-256"), std::string::npos) << r.err;
}

TEST(Faults, CorruptProgramIsRefusedNamingTheFile) {
  std::string dir = compile_two_stages("corrupt_prog");
  flip_byte(dir + "/node1/backward.onnx", 10);
  auto r = run_process({binary("ravnest-rt"), "--bundle", dir + "/node1"}, 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("backward.onnx"), std::string::npos) << r.err;
}

TEST(Faults, MissingFileIsRefused) {
  std::string dir = compile_two_stages("missing");
  fs::remove(dir + "/node1/schedule.json");
  auto r = run_process({binary("ravnest-rt"), "--bundle", dir + "/node1"}, 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("schedule.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;
}

TEST(Faults, WrongFormatVersionIsRefused) {
  std::string dir = compile_two_stages("version");
  std::string path = dir + "/node0/manifest.json";
  auto json = read_json_file(path);
  ASSERT_TRUE(json.ok());
  json->set("version", 99);
  std::ofstream(path, std::ios::trunc) << json->dump();
  auto r = run_process({binary("ravnest-rt"), "--bundle", dir + "/node0"}, 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("version 99"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("manifest.json"), std::string::npos) << r.err;
}

TEST(Faults, NotABundleFolder) {
  std::string dir = testing::temp_dir("nobundle");
  auto r = run_process({binary("ravnest-rt"), "--bundle", dir}, 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no manifest.json"), std::string::npos) << r.err;
}

// Kill the second stage mid-run: the first stage reports the dead peer by
// name within seconds (well before its receive deadline), and exits non-zero.
TEST(Faults, KilledNeighbourIsReportedQuickly) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile_two_stages("kill", {"--steps", "100000"});
  std::string a0 = "127.0.0.1:" + std::to_string(free_loopback_port());
  std::string a1 = "127.0.0.1:" + std::to_string(free_loopback_port());
  testing::Process node1({binary("ravnest-rt"), "--bundle", dir + "/node1", "--listen", a1, "--peer", "node0=" + a0,
                          "--recv-timeout", "60"},
                         {"OMP_NUM_THREADS=1"});
  testing::Process node0({binary("ravnest-rt"), "--bundle", dir + "/node0", "--listen", a0, "--peer", "node1=" + a1,
                          "--recv-timeout", "60"},
                         {"OMP_NUM_THREADS=1"});
  ASSERT_TRUE(node0.wait_for_output("\"step\":3,", 60)) << "node0 did not reach step 3";
  node1.kill_now(SIGKILL);
  auto r0 = node0.wait(30);
  EXPECT_FALSE(r0.timed_out);
  EXPECT_LT(r0.seconds, 10.0) << "the dead peer should be noticed within seconds, not at the 60 s deadline";
  EXPECT_EQ(r0.exit_code, 1);
  EXPECT_NE(r0.err.find("node1"), std::string::npos) << r0.err;
  node1.wait(5);
}

}  // namespace
}  // namespace ravnest

namespace ravnest {
namespace {

// ravnest-launch exits non-zero and names the node that failed.
TEST(Faults, LauncherReportsTheFailedNode) {
  std::string dir = compile_two_stages("launchfail");
  flip_byte(dir + "/node1/weights.rvt", 100);
  auto r = run_process({binary("ravnest-launch"), dir, "--quiet", "--timeout", "120"}, 150, {"OMP_NUM_THREADS=1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("node1 (stage 1) failed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("weights.rvt"), std::string::npos) << r.err;
  // node0 is stopped (or gives up) instead of waiting forever for its peer.
  EXPECT_FALSE(r.timed_out);
}

// The command-line errors of `ravnestc inspect`, end to end.
TEST(Cli, InspectReportsAndFails) {
  auto ok = run_process({binary("ravnestc"), "inspect", source_path("models/cnn/cnn.onnx"), "--batch", "64"}, 60);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("421,642"), std::string::npos) << ok.out;
  auto missing = run_process({binary("ravnestc"), "inspect", "/nonexistent/model.onnx"}, 60);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("ravnestc: error: model file '/nonexistent/model.onnx' does not exist"), std::string::npos)
      << missing.err;
  auto unset = run_process({binary("ravnestc"), "inspect", source_path("models/cnn/cnn.onnx")}, 60);
  EXPECT_EQ(unset.exit_code, 1);
  EXPECT_NE(unset.err.find("batch"), std::string::npos) << unset.err;
  auto usage = run_process({binary("ravnestc"), "inspect"}, 60);
  EXPECT_EQ(usage.exit_code, 2);
  auto too_many = run_process({binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o",
                               testing::temp_dir("toomany"), "--stages", "40"},
                              60);
  EXPECT_EQ(too_many.exit_code, 1);
  EXPECT_NE(too_many.err.find("stages"), std::string::npos) << too_many.err;
}

}  // namespace
}  // namespace ravnest
