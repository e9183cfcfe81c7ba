// Hot join (docs/faults.md): a node started with `ravnest-rt join` during a run
// becomes the backup of the stage the run prefers (least reliable or slowest
// machine; stage order without a devices file), asking any node first. Then that
// stage's worker is killed with SIGKILL at a random step (seed printed and
// recorded): the joined backup takes the stage over and training ends with the
// parameters of the run without the failure. A run whose stages all have backups
// refuses a joiner with a clear error.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "common/ports.h"
#include "tests/integration/node_runs.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::relative_diff;
using testing::run_process;
using testing::source_path;

constexpr int kStages = 3;
constexpr int kSteps = 300;

std::string compile(const std::string& name, int steps, const std::vector<std::string>& extra) {
  std::string dir = testing::temp_dir(name);
  std::vector<std::string> argv{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir,
                                "--batch", "32", "--microbatches", "4", "--steps", std::to_string(steps), "--no-eval"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto r = run_process(argv, 120);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir;
}

std::string loopback() { return "127.0.0.1:" + std::to_string(free_loopback_port()); }

TEST(Join, JoinedBackupTakesOverWithNoStepLost) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::string dir = compile("join", kSteps, {"--stages", std::to_string(kStages), "--clip-norm", "5"});
  const auto base = testing::run_uninterrupted(dir);
  ASSERT_EQ(base.exit_code, 0) << base.err;

  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  const int join_at = 3 + static_cast<int>(rng() % 10);
  const int kill_after_join = 1 + static_cast<int>(rng() % 30);
  RecordProperty("seed", std::to_string(seed));
  std::printf("seed %u: joining at step %d, killing stage 0's worker %d steps after the join\n", seed, join_at,
              kill_after_join);

  const std::string out = dir + "/joined";
  std::filesystem::create_directories(out);
  std::vector<std::string> address;
  for (int i = 0; i < kStages; ++i) address.push_back(loopback());
  std::vector<std::unique_ptr<testing::Process>> nodes;
  for (int i = 0; i < kStages; ++i) nodes.push_back(testing::start_node(dir, i, address, out));
  ASSERT_TRUE(nodes[kStages - 1]->wait_for_output("\"step\":" + std::to_string(join_at) + ",", 120))
      << "the last stage did not reach step " << join_at;
  // Asked at the last stage, which sends it on to stage 0 (first in the order without a devices file).
  testing::Process joiner({binary("ravnest-rt"), "join", "--via", "node2=" + address[2], "--listen", loopback(), "--id",
                           "newcomer", "--dir", dir + "/newcomer", "--recv-timeout", "30", "--save-params",
                           out + "/newcomer.rvt"},
                          {"OMP_NUM_THREADS=1"});
  if (!nodes[0]->wait_for_output("\"event\":\"backup_joined\"", 120)) {
    const auto j = joiner.wait(5);
    const auto w = nodes[0]->wait(5);
    FAIL() << "the joiner did not become a backup; joiner: " << j.err << "\nnode0: " << w.err;
  }
  // The step after which it joined, from node0's event; the worker is killed a few steps later.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(nodes[0]->output(), m, std::regex(R"("event":"backup_joined"[^}]*"step":([0-9]+))")));
  const int joined_after = std::stoi(m[1].str());
  RecordProperty("joined_after_step", std::to_string(joined_after));
  ASSERT_LT(joined_after, kSteps - 10) << "the join took most of the run";
  const int kill_at = std::min(kSteps - 5, joined_after + kill_after_join);
  ASSERT_TRUE(nodes[kStages - 1]->wait_for_output("\"step\":" + std::to_string(kill_at) + ",", 120));
  nodes[0]->kill_now(SIGKILL);
  RecordProperty("kill_at_step", std::to_string(kill_at));
  std::map<int, testing::ProcessResult> results;
  for (int i = 1; i < kStages; ++i) results[i] = nodes[static_cast<size_t>(i)]->wait(240);
  const testing::ProcessResult killed = nodes[0]->wait(5);
  const testing::ProcessResult backup = joiner.wait(240);
  for (const auto& [i, r] : results) {
    EXPECT_FALSE(r.timed_out) << "node" << i;
    EXPECT_EQ(r.exit_code, 0) << "node" << i << ": " << r.err;
  }
  ASSERT_EQ(backup.exit_code, 0) << backup.err;
  EXPECT_NE(backup.err.find("sends us on"), std::string::npos) << "node2 should have sent the joiner to stage 0: "
                                                                << backup.err;
  EXPECT_NE(killed.out.find("\"event\":\"backup_joined\",\"node\":\"node0\",\"stage\":0,\"backup\":\"newcomer\""),
            std::string::npos)
      << killed.out;
  ASSERT_TRUE(std::regex_search(backup.out, m, std::regex(R"(\{"event":"takeover"[^}]*"seconds":([0-9.]+)\})")))
      << backup.out << backup.err;
  RecordProperty("takeover_seconds", m[1].str());
  std::printf("takeover: %s\n", m[0].str().c_str());
  EXPECT_NE(results[kStages - 1].out.find("\"step\":" + std::to_string(kSteps) + ","), std::string::npos);
  // Every stage's final parameters equal the uninterrupted run's.
  for (int s = 0; s < kStages; ++s) {
    const std::string got = s == 0 ? out + "/newcomer.rvt" : out + "/node" + std::to_string(s) + ".rvt";
    testing::expect_params_close(testing::read_tensors(dir + "/base/node" + std::to_string(s) + ".rvt"),
                                 testing::read_tensors(got), "stage " + std::to_string(s));
  }
}

// Under ravnest-launch: the launcher says where its nodes listen, and a worker whose joined backup
// announced itself may fail without ending the run.
TEST(Join, LauncherLetsAJoinedBackupTakeOver) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::string dir = compile("join-launch", kSteps, {"--stages", std::to_string(kStages)});
  testing::Process launch({binary("ravnest-launch"), dir, "--timeout", "240"}, {"OMP_NUM_THREADS=1"});
  ASSERT_TRUE(launch.wait_for_output("step ", 120)) << "no progress";
  std::smatch m;
  ASSERT_TRUE(std::regex_search(launch.output(), m, std::regex(R"(node1 \(cluster 0, stage 1\) listens at (\S+))")))
      << launch.output();
  testing::Process joiner({binary("ravnest-rt"), "join", "--via", "node1=" + m[1].str(), "--listen", loopback(), "--id",
                           "newcomer", "--dir", dir + "/newcomer", "--recv-timeout", "30"},
                          {"OMP_NUM_THREADS=1"});
  ASSERT_TRUE(launch.wait_for_output("newcomer joined as the backup of stage 0 (node0)", 120)) << launch.output();
  std::vector<int> victim = testing::ravnest_rt_pids(dir + "/node0 ");
  ASSERT_EQ(victim.size(), 1u) << "stage 0's worker not found";
  kill(victim[0], SIGKILL);
  const auto r = launch.wait(300);
  const auto j = joiner.wait(240);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.err.find("node0 (stage 0) failed: killed by signal"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("its joined backup newcomer takes over"), std::string::npos) << r.err;
  EXPECT_EQ(j.exit_code, 0) << j.err;
  EXPECT_NE(j.out.find("\"event\":\"takeover\""), std::string::npos) << j.out;
}

// Joining as a new cluster: a run of two clusters of two stages compiled with --joinable; two newcomers ask
// (one through cluster 1's node), cluster 0's first stage makes them cluster 2, each copies one stage of
// cluster 0, receives the run's average in rounds without training until both are in every ring, then trains
// its own order of the data from the next step. The last round leaves every copy of every cluster identical.
TEST(Join, NewcomersFormANewClusterAndEveryCopyEndsIdentical) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::string dir = compile("join-cluster", kSteps, {"--clusters", "2", "--stages", "2", "--average-every", "4",
                                                           "--microbatches", "2", "--joinable"});
  const std::string out = dir + "/params";
  std::filesystem::create_directories(out);
  std::vector<std::string> address;
  for (int i = 0; i < 4; ++i) address.push_back(loopback());
  std::vector<std::unique_ptr<testing::Process>> nodes;
  for (int i = 0; i < 4; ++i) nodes.push_back(testing::start_node(dir, i, address, out));
  ASSERT_TRUE(nodes[1]->wait_for_output("\"step\":8,", 120)) << "cluster 0 did not reach step 8";
  std::vector<std::unique_ptr<testing::Process>> newcomers;
  for (const char* id : {"newA", "newB"})
    newcomers.push_back(std::make_unique<testing::Process>(
        std::vector<std::string>{binary("ravnest-rt"), "join", "--via",
                                 std::string(id) == "newA" ? "node0=" + address[0] : "node3=" + address[3], "--listen",
                                 loopback(), "--id", id, "--dir", dir + "/" + id, "--recv-timeout", "60",
                                 "--save-params", out + "/" + id + ".rvt"},
        std::vector<std::string>{"OMP_NUM_THREADS=1"}));
  std::vector<testing::ProcessResult> results;
  for (auto& n : nodes) results.push_back(n->wait(300));
  std::vector<testing::ProcessResult> joined;
  for (auto& n : newcomers) joined.push_back(n->wait(120));
  for (size_t i = 0; i < results.size(); ++i) EXPECT_EQ(results[i].exit_code, 0) << "node" << i << ": " << results[i].err;
  if (::testing::Test::HasFailure()) {  // a node failed: what the newcomers saw explains most such failures
    for (size_t i = 0; i < joined.size(); ++i)
      ADD_FAILURE() << "newcomer " << i << " (exit code " << joined[i].exit_code << "): " << joined[i].err;
  }
  for (const auto& r : joined) {
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(\{"event":"cluster_joined"[^}]*"step":([0-9]+))"))) << r.out;
    ::testing::Test::RecordProperty("cluster_joined_at_step", m[1].str());
    std::printf("new cluster trains from step %s\n", m[1].str().c_str());
    EXPECT_NE(r.out.find("\"step\":" + std::to_string(kSteps) + ","), std::string::npos) << "it trained to the end";
  }
  // Every cluster's copy of every parameter (a cluster's stages together) is the same after the last round.
  auto cluster = [&](const std::vector<std::string>& names) {
    std::map<std::string, rt::Tensor> all;
    for (const auto& n : names)
      for (auto& [k, v] : testing::read_tensors(out + "/" + n + ".rvt")) all[k] = v;
    return all;
  };
  const auto c0 = cluster({"node0", "node1"}), c1 = cluster({"node2", "node3"}), c2 = cluster({"newA", "newB"});
  ASSERT_EQ(c0.size(), 8u);
  for (const auto* other : {&c1, &c2}) {
    ASSERT_EQ(other->size(), c0.size());
    for (const auto& [name, t] : c0) {
      ASSERT_TRUE(other->count(name)) << name;
      EXPECT_EQ(std::memcmp(other->at(name).raw(), t.raw(), t.bytes()), 0) << name << " differs between clusters";
    }
  }
}

TEST(Join, RunWhoseStagesAllHaveBackupsRefusesAJoiner) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  // Long enough not to end before the joiner is answered; stopped once it is.
  const std::string dir = compile("join-full", 1500, {"--stages", "1", "--backup-stages", "0"});
  const std::vector<std::string> address{loopback(), loopback()};
  const std::string out = dir + "/params";
  std::filesystem::create_directories(out);
  auto backup = testing::start_node(dir, 1, address, out);
  auto worker = testing::start_node(dir, 0, address, out);
  ASSERT_TRUE(worker->wait_for_output("\"step\":2,", 120));
  auto r = run_process({binary("ravnest-rt"), "join", "--via", "node0=" + address[0], "--listen", loopback(), "--id",
                        "late", "--dir", dir + "/late"},
                       120, {"OMP_NUM_THREADS=1"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("no stage of the run accepts late as a backup"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("every stage has a backup"), std::string::npos) << r.err;
  // Training went on meanwhile.
  EXPECT_TRUE(worker->wait_for_output("\"step\":", 30));
  worker->kill_now(SIGKILL);
  backup->kill_now(SIGKILL);
}

}  // namespace
}  // namespace ravnest
