// Backup nodes (docs/faults.md): a 3-stage CNN cluster where every stage has a
// backup (and gradient clipping, whose norm exchange along the pipeline a failure
// can interrupt too). A random stage's worker is killed with SIGKILL at a random step (the
// seed is printed and recorded, so a failure can be replayed); its backup takes
// the stage over, the neighbours replay the unfinished step, and training ends
// with the parameters of the same run without the failure.
#include <gtest/gtest.h>
#include <signal.h>
#include <string.h>

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
constexpr int kSteps = 80;

std::string compile(const std::string& name, const std::vector<std::string>& extra = {}) {
  std::string dir = testing::temp_dir(name);
  std::vector<std::string> argv{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir, "--stages",
                                std::to_string(kStages), "--backup-stages", "0,1,2", "--batch", "32", "--microbatches",
                                "4", "--steps", std::to_string(kSteps), "--no-eval", "--clip-norm", "5"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto r = run_process(argv, 120);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir;
}

// Nodes 0..2 are the workers of stages 0..2, nodes 3..5 their backups. A random
// worker gets `signal` at a random step: SIGKILL (its sockets close) or SIGSTOP (a
// frozen process: its sockets stay open and only the missed heartbeats tell, with
// the deadline's floor set to `heartbeat_timeout`).
// `backup_every`: the steps between two states sent to the backup (its last state follows a step k with
// (k + 1) % backup_every == 0, so the takeover resumes at a multiple of it).
void fail_a_stage(const std::string& name, int signal, const std::string& heartbeat_timeout, int backup_every = 1,
                  const std::vector<std::string>& extra = {}) {
  const std::string dir = compile(name, extra);
  const auto base = testing::run_uninterrupted(dir);
  ASSERT_EQ(base.exit_code, 0) << base.err;

  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  const int victim = static_cast<int>(rng() % kStages);
  const int kill_at = 5 + static_cast<int>(rng() % (kSteps - 20));
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  ::testing::Test::RecordProperty("victim_stage", std::to_string(victim));
  ::testing::Test::RecordProperty("kill_at_step", std::to_string(kill_at));
  std::printf("seed %u: %s to stage %d's worker at step %d\n", seed, strsignal(signal), victim, kill_at);

  std::filesystem::create_directories(dir + "/killed");
  std::vector<std::string> address;
  for (int i = 0; i < 2 * kStages; ++i) address.push_back("127.0.0.1:" + std::to_string(free_loopback_port()));
  std::vector<std::unique_ptr<testing::Process>> nodes(2 * kStages);
  for (int i : {3, 4, 5, 0, 1, 2})
    nodes[static_cast<size_t>(i)] =
        testing::start_node(dir, i, address, dir + "/killed", {"--heartbeat-timeout", heartbeat_timeout});
  ASSERT_TRUE(nodes[kStages - 1]->wait_for_output("\"step\":" + std::to_string(kill_at) + ",", 120))
      << "the last stage did not reach step " << kill_at;
  nodes[static_cast<size_t>(victim)]->kill_now(signal);
  std::map<int, testing::ProcessResult> results;
  for (int i = 0; i < 2 * kStages; ++i)
    if (i != victim) results[i] = nodes[static_cast<size_t>(i)]->wait(240);
  nodes[static_cast<size_t>(victim)]->kill_now(SIGKILL);  // a frozen one never ends by itself
  nodes[static_cast<size_t>(victim)]->wait(5);
  for (const auto& [i, r] : results) {
    EXPECT_FALSE(r.timed_out) << "node" << i;
    EXPECT_EQ(r.exit_code, 0) << "node" << i << ": " << r.err;
  }
  // The backup logged its takeover and how long it took; the last stage reached the end.
  const testing::ProcessResult& backup = results[victim + kStages];
  std::smatch m;
  ASSERT_TRUE(std::regex_search(backup.out, m,
                                std::regex(R"(\{"event":"takeover"[^}]*"step":([0-9]+),"seconds":([0-9.]+)\})")))
      << backup.out << backup.err;
  ::testing::Test::RecordProperty("takeover_seconds", m[2].str());
  std::printf("takeover: %s\n", m[0].str().c_str());
  EXPECT_EQ(std::stoi(m[1].str()) % backup_every, 0) << "the backup's last state follows every " << backup_every
                                                      << "th step: " << m[0].str();
  const int last = victim == kStages - 1 ? 2 * kStages - 1 : kStages - 1;
  EXPECT_NE(results[last].out.find("\"step\":" + std::to_string(kSteps) + ","), std::string::npos);
  // Every stage's final parameters equal the uninterrupted run's.
  for (int s = 0; s < kStages; ++s) {
    const int node = s == victim ? s + kStages : s;
    testing::expect_params_close(testing::read_tensors(dir + "/base/node" + std::to_string(s) + ".rvt"),
                                 testing::read_tensors(dir + "/killed/node" + std::to_string(node) + ".rvt"),
                                 "stage " + std::to_string(s));
  }
}

TEST(Backups, KilledStageIsTakenOverWithNoStepLost) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fail_a_stage("backups", SIGKILL, "15");
}

// The state goes to the backups every 4 steps only: a takeover replays up to 4 steps (every stage keeps
// 5 snapshots), with the same final parameters.
TEST(Backups, StateEveryFewStepsReplaysMoreStepsWithNoneLost) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fail_a_stage("backups-every4", SIGKILL, "15", 4, {"--backup-every", "4"});
}

// A frozen worker (SIGSTOP) keeps its connections open, and its kernel keeps acknowledging
// what is sent to it: without heartbeats nothing would notice it before the receive timeout.
TEST(Backups, FrozenStageIsDeclaredFailedAndTakenOver) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fail_a_stage("backups-frozen", SIGSTOP, "3");
}

// Under ravnest-launch: a worker with a running backup is not the end of the run.
TEST(Backups, LauncherLetsTheBackupTakeOver) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::string dir = compile("backups-launch");
  testing::Process launch({binary("ravnest-launch"), dir, "--save-params", dir + "/params", "--timeout", "240"},
                          {"OMP_NUM_THREADS=1"});
  // The launcher prints its first progress line at the first step: training has begun.
  ASSERT_TRUE(launch.wait_for_output("step ", 120)) << "no progress";
  std::vector<int> victim = testing::ravnest_rt_pids(dir + "/node1 ");
  ASSERT_EQ(victim.size(), 1u) << "stage 1's worker not found";
  kill(victim[0], SIGKILL);
  auto r = launch.wait(300);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.err.find("node1 (stage 1) failed: killed by signal"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("its backup node4 takes over"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("node4 took over stage 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done: " + std::to_string(kSteps) + " steps"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace ravnest
