// Backups in runs of several clusters (docs/faults.md): clusters of 2 stages
// average every 2 steps; a stage with a backup is killed with SIGKILL at a random
// step (the seed is printed and recorded, so a failure can be replayed), often in the
// middle of an averaging round. Its backup takes the stage over in its pipeline and
// its place in the averaging rings: the ring members either hand it the round's
// result or run the round again with it. Every node ends with the parameters of the
// run without the failure, and every cluster's copies stay the same.
#include <gtest/gtest.h>
#include <signal.h>

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

constexpr int kStages = 2;
constexpr int kSteps = 60;

// Clusters of 2 stages; stage 0 of cluster 0 and stage 1 of cluster 1 have backups (nodes after the workers').
std::string compile(const std::string& name, int clusters) {
  std::string dir = testing::temp_dir(name);
  auto r = run_process({binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir, "--clusters",
                        std::to_string(clusters), "--stages", std::to_string(kStages), "--backup-stages", "0:0,1:1",
                        "--batch", "32", "--microbatches", "4", "--steps", std::to_string(kSteps), "--no-eval",
                        "--average-every", "2"},
                       120);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir;
}

using testing::expect_params_close;

// `exact`: compare with the run without the failure. Rings of 3 or more are ordered by links measured at start,
// which differ from run to run, and with them the order of the sums: two runs without failures differ too.
// `last_step`: the kill comes when the victim reports its last step (before that step's round and its final
// state to the backup), else at a random step.
void kill_a_ring_member(const std::string& name, int clusters, bool exact, bool last_step = false) {
  const std::string dir = compile(name, clusters);
  const int workers = clusters * kStages;
  const int nodes = workers + 2;  // node W is stage 0 of cluster 0's backup, node W + 1 stage 1 of cluster 1's
  if (exact) {
    const auto base = testing::run_uninterrupted(dir);
    ASSERT_EQ(base.exit_code, 0) << base.err;
  }

  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  const int victim = rng() % 2 ? 0 : 3;  // stage 0 of cluster 0 or stage 1 of cluster 1
  const int backup = victim == 0 ? workers : workers + 1;
  const int kill_at = last_step ? kSteps : 3 + static_cast<int>(rng() % (kSteps - 10));
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  ::testing::Test::RecordProperty("victim", "node" + std::to_string(victim));
  ::testing::Test::RecordProperty("kill_at_step", std::to_string(kill_at));
  std::printf("seed %u: SIGKILL to node%d at step %d\n", seed, victim, kill_at);

  std::filesystem::create_directories(dir + "/killed");
  std::vector<std::string> address;
  for (int i = 0; i < nodes; ++i) address.push_back("127.0.0.1:" + std::to_string(free_loopback_port()));
  std::vector<std::unique_ptr<testing::Process>> procs(static_cast<size_t>(nodes));
  for (int i = nodes - 1; i >= 0; --i)  // backups first: their workers dial them
    procs[static_cast<size_t>(i)] = testing::start_node(dir, i, address, dir + "/killed");
  // Every node prints its steps: the victim's own "step" line is printed before its averaging round.
  ASSERT_TRUE(procs[static_cast<size_t>(victim)]->wait_for_output("\"step\":" + std::to_string(kill_at) + ",", 120))
      << "node" << victim << " did not reach step " << kill_at;
  procs[static_cast<size_t>(victim)]->kill_now(SIGKILL);
  std::map<int, testing::ProcessResult> results;
  for (int i = 0; i < nodes; ++i)
    if (i != victim) results[i] = procs[static_cast<size_t>(i)]->wait(240);
  procs[static_cast<size_t>(victim)]->wait(5);
  for (const auto& [i, r] : results) {
    EXPECT_FALSE(r.timed_out) << "node" << i;
    EXPECT_EQ(r.exit_code, 0) << "node" << i << ": " << r.err;
  }
  // The backup took the stage over and rejoined the rings; every ring member of the victim replaced it.
  const testing::ProcessResult& b = results[backup];
  std::smatch m;
  ASSERT_TRUE(std::regex_search(b.out, m, std::regex(R"(\{"event":"takeover"[^}]*\})"))) << b.out << b.err;
  std::printf("%s\n", m[0].str().c_str());
  ASSERT_TRUE(std::regex_search(b.out, m, std::regex(R"(\{"event":"rings_rejoined"[^}]*\})"))) << b.out << b.err;
  std::printf("%s\n", m[0].str().c_str());
  const int stage = victim % kStages;
  for (int c = 0; c < clusters; ++c) {
    const int member = c * kStages + stage;
    if (member == victim) continue;
    EXPECT_NE(results[member].out.find(R"("event":"ring_member_replaced","node":"node)" + std::to_string(member) +
                                       R"(","lost":"node)" + std::to_string(victim) + "\""),
              std::string::npos)
        << "node" << member << ": " << results[member].out;
  }
  // Every node's final parameters equal the uninterrupted run's: no step was lost, no round counted twice. The
  // last stage of every cluster reached the last step.
  for (int c = 0; c < clusters; ++c) {
    const int last = c * kStages + kStages - 1;
    const int node = last == victim ? backup : last;
    EXPECT_NE(results[node].out.find("\"step\":" + std::to_string(kSteps) + ","), std::string::npos) << "node" << node;
  }
  for (int i = 0; exact && i < workers; ++i) {
    const int node = i == victim ? backup : i;
    expect_params_close(testing::read_tensors(dir + "/base/node" + std::to_string(i) + ".rvt"),
                        testing::read_tensors(dir + "/killed/node" + std::to_string(node) + ".rvt"),
                        "node" + std::to_string(i) + " (as node" + std::to_string(node) + ")");
  }
  // And the clusters' copies of each stage are the same after the last round.
  for (int i = kStages; i < workers; ++i) {
    const int node = i == victim ? backup : i;
    const int first = i % kStages == victim ? backup : i % kStages;  // cluster 0's node of the same stage
    expect_params_close(testing::read_tensors(dir + "/killed/node" + std::to_string(first) + ".rvt"),
                        testing::read_tensors(dir + "/killed/node" + std::to_string(node) + ".rvt"),
                        "node" + std::to_string(node) + " against cluster 0's copy");
  }
}

TEST(ClusterBackups, KilledRingMemberOfTwoClustersIsReplacedWithNoStepLost) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  kill_a_ring_member("cluster-backups-2", 2, true);
}

// The victim fails in its last step, when its neighbours and ring members are done or nearly: they stay until
// every stage and ring member is done, so its backup can still replay the step and the last round with them.
TEST(ClusterBackups, RingMemberKilledInItsLastStepIsStillReplaced) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  kill_a_ring_member("cluster-backups-last", 2, true, true);
}

// Rings of three: the member not next to the victim in the ring learns of the loss too, all members agree on the
// backup's place, and every cluster ends with the same parameters.
TEST(ClusterBackups, KilledRingMemberOfThreeClustersIsReplacedWithNoStepLost) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  kill_a_ring_member("cluster-backups-3", 3, false);
}

// Under ravnest-launch: a failed worker of a run of several clusters whose backup runs ends neither its cluster
// nor the run.
TEST(ClusterBackups, LauncherLetsTheBackupTakeTheRingMembersPlace) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::string dir = compile("cluster-backups-launch", 2);
  testing::Process launch({binary("ravnest-launch"), dir, "--save-params", dir + "/params", "--timeout", "240"},
                          {"OMP_NUM_THREADS=1"});
  // Once the backup mirrors node3, node3 is past its start-up (its rings connected; a worker lost before it
  // reached its backup is not replaced, docs/faults.md).
  ASSERT_TRUE(launch.wait_for_error("node5 (stage 1): backup of node3", 120)) << "node5 never mirrored node3";
  std::vector<int> victim = testing::ravnest_rt_pids(dir + "/node3 ");
  ASSERT_EQ(victim.size(), 1u) << "cluster 1's stage 1 worker not found";
  kill(victim[0], SIGKILL);
  auto r = launch.wait(300);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.err.find("its backup node5 takes over"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("was lost"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done: " + std::to_string(kSteps) + " steps"), std::string::npos) << r.out;
  expect_params_close(testing::read_tensors(dir + "/params/node1.rvt"), testing::read_tensors(dir + "/params/node5.rvt"),
                      "stage 1: cluster 1's backup against cluster 0");
}

// A node joins a run of two clusters (`ravnest-rt join`, compiled with --join-backups) and becomes the backup of
// the first stage of the cluster it asks; that worker is then killed a random number of steps later. The backup
// takes its place in the pipeline and in the ring, and the run ends with the parameters of the run without the
// join and the failure, the same in both clusters.
TEST(ClusterBackups, JoinedBackupTakesTheRingMembersPlace) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const int steps = 200;
  const std::string dir = testing::temp_dir("cluster-backups-join");
  auto compiled = run_process({binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir, "--clusters",
                               "2", "--stages", std::to_string(kStages), "--join-backups", "--batch", "32",
                               "--microbatches", "4", "--steps", std::to_string(steps), "--no-eval", "--average-every",
                               "2"},
                              120);
  ASSERT_EQ(compiled.exit_code, 0) << compiled.err;
  const auto base = testing::run_uninterrupted(dir);
  ASSERT_EQ(base.exit_code, 0) << base.err;

  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  const int join_at = 3 + static_cast<int>(rng() % 10);
  const int kill_after_join = 1 + static_cast<int>(rng() % 30);
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  std::printf("seed %u: joining at step %d, killing node2 %d steps after the join\n", seed, join_at, kill_after_join);
  const int workers = 2 * kStages;
  std::vector<std::string> address;
  for (int i = 0; i < workers; ++i) address.push_back("127.0.0.1:" + std::to_string(free_loopback_port()));
  const std::string out = dir + "/joined";
  std::filesystem::create_directories(out);
  std::vector<std::unique_ptr<testing::Process>> procs;
  for (int i = 0; i < workers; ++i) procs.push_back(testing::start_node(dir, i, address, out));
  const int victim = 2;  // cluster 1's first stage: first in its cluster's order without a devices file
  ASSERT_TRUE(procs[victim]->wait_for_output("\"step\":" + std::to_string(join_at) + ",", 120));
  testing::Process joiner({binary("ravnest-rt"), "join", "--via", "node2=" + address[2], "--listen",
                           "127.0.0.1:" + std::to_string(free_loopback_port()), "--id", "newcomer", "--dir",
                           dir + "/newcomer", "--recv-timeout", "30", "--save-params", out + "/newcomer.rvt"},
                          {"OMP_NUM_THREADS=1"});
  if (!procs[victim]->wait_for_output("\"event\":\"backup_joined\"", 120)) {
    const auto j = joiner.wait(5);
    FAIL() << "the joiner did not become a backup; joiner: " << j.err;
  }
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(procs[victim]->output(), m, std::regex(R"("event":"backup_joined"[^}]*"step":([0-9]+))")));
  const int joined_after = std::stoi(m[1].str());
  ASSERT_LT(joined_after, steps - 40) << "the join took most of the run";
  const int kill_at = joined_after + kill_after_join;
  ::testing::Test::RecordProperty("kill_at_step", std::to_string(kill_at));
  ASSERT_TRUE(procs[victim]->wait_for_output("\"step\":" + std::to_string(kill_at) + ",", 120));
  procs[victim]->kill_now(SIGKILL);
  std::map<int, testing::ProcessResult> results;
  for (int i = 0; i < workers; ++i)
    if (i != victim) results[i] = procs[static_cast<size_t>(i)]->wait(240);
  procs[victim]->wait(5);
  const testing::ProcessResult backup = joiner.wait(240);
  for (const auto& [i, r] : results) {
    EXPECT_FALSE(r.timed_out) << "node" << i;
    EXPECT_EQ(r.exit_code, 0) << "node" << i << ": " << r.err;
  }
  ASSERT_EQ(backup.exit_code, 0) << backup.err;
  ASSERT_TRUE(std::regex_search(backup.out, m, std::regex(R"(\{"event":"takeover"[^}]*\})")))
      << backup.out << backup.err;
  std::printf("%s\n", m[0].str().c_str());
  EXPECT_NE(results[0].out.find(R"("event":"ring_member_replaced","node":"node0","lost":"node2","backup":"newcomer")"),
            std::string::npos)
      << results[0].out;
  for (int i = 0; i < workers; ++i) {
    const std::string got = i == victim ? out + "/newcomer.rvt" : out + "/node" + std::to_string(i) + ".rvt";
    expect_params_close(testing::read_tensors(dir + "/base/node" + std::to_string(i) + ".rvt"),
                        testing::read_tensors(got), "node" + std::to_string(i));
  }
}

}  // namespace
}  // namespace ravnest
