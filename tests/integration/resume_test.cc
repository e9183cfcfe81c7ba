// Checkpoints end to end: a 3-stage CNN run whose every process (one
// ravnest-rt per stage) is killed with SIGKILL at a random point after its
// first checkpoint, then resumed with `ravnest-launch --resume`, ends
// with the parameters of the uninterrupted run (within 1e-5 relative) and
// repeats its losses for the resumed steps; for momentum SGD and AdamW. The
// random kill point's seed is printed; set RAVNEST_TEST_SEED to replay it.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "common/ports.h"
#include "runtime/checkpoint.h"
#include "runtime/tensor_file.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

namespace fs = std::filesystem;
using testing::binary;
using testing::run_process;
using testing::source_path;
using testing::relative_diff;

// The run: 3 stages, or with `--clusters`, several clusters averaging every few steps.
const std::vector<std::string> kOneCluster{"--stages", "3"};
constexpr int64_t kSteps = 30;
constexpr int64_t kEvery = 5;
const std::vector<std::string> kEnv{"OMP_NUM_THREADS=1"};

struct TrainedRun {
  std::map<std::string, rt::Tensor> params;  // "node/name": every parameter and running statistic of every node
  std::map<int64_t, double> losses;          // by step
};

TrainedRun read_run(const std::string& params_dir, const std::string& losses_path, int nodes) {
  TrainedRun run;
  for (int s = 0; s < nodes; ++s) {
    const std::string node = "node" + std::to_string(s);
    auto file = rt::read_tensor_file(params_dir + "/" + node + ".rvt");
    EXPECT_TRUE(file.ok()) << file.status().to_string();
    if (!file.ok()) continue;
    for (auto& [k, v] : *file) run.params[node + "/" + k] = v;
  }
  std::ifstream in(losses_path);
  long long step;
  double loss;
  while (in >> step >> loss) run.losses[step] = loss;
  return run;
}

// Steps of the checkpoints that node `s` holds.
std::vector<int64_t> held(const std::string& ckpt_dir, int s) {
  auto steps = rt::list_checkpoints(rt::checkpoint_node_dir(ckpt_dir, "node" + std::to_string(s)));
  return steps.ok() ? *steps : std::vector<int64_t>{};
}

std::string compile(const std::string& name, const std::vector<std::string>& flags) {
  std::string dir = testing::temp_dir(name);
  std::vector<std::string> args{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir,
                                "--batch", "32", "--microbatches", "4",
                                "--steps", std::to_string(kSteps), "--no-eval", "--seed", "7"};
  args.insert(args.end(), flags.begin(), flags.end());
  auto c = run_process(args, 120);
  EXPECT_EQ(c.exit_code, 0) << c.err << c.out;
  return dir;
}

uint64_t test_seed() {
  if (const char* s = std::getenv("RAVNEST_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

// Kills every process of a run of `nodes` nodes (compiled with `flags`) at a random point after its first
// checkpoints, resumes it, and compares with the uninterrupted run. Returns the bundle folder.
std::string kill_resume_and_compare(const std::string& name, const std::vector<std::string>& flags, int nodes_count = 3) {
  const std::string dir = compile(name, flags);
  if (::testing::Test::HasFailure()) return dir;

  // The uninterrupted run.
  auto full = run_process({binary("ravnest-launch"), dir, "--quiet", "--save-params", dir + "/full", "--losses",
                           dir + "/full-losses.txt", "--timeout", "300"},
                          330, kEnv);
  EXPECT_EQ(full.exit_code, 0) << full.err << full.out;
  const TrainedRun want = read_run(dir + "/full", dir + "/full-losses.txt", nodes_count);
  EXPECT_EQ(static_cast<int64_t>(want.losses.size()), kSteps);

  // The same run with checkpoints, every process killed with SIGKILL at a random point.
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  // Kill at a random step after the first checkpoint (of step 5) and before the end, a random time into it: the
  // kill lands anywhere in a step, sometimes while a checkpoint is written or while the stages hold different ones.
  const int64_t target = 6 + static_cast<int64_t>(rng() % 17);  // the last stage has reported step 6..22
  const int delay_ms = static_cast<int>(rng() % 50);
  std::vector<int> order(nodes_count);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::printf("[%s] kill seed %llu (RAVNEST_TEST_SEED to replay): SIGKILL every node %d ms after the last stage "
              "reports step %lld\n",
              name.c_str(), static_cast<unsigned long long>(seed), delay_ms, static_cast<long long>(target));
  ::testing::Test::RecordProperty("kill_seed", std::to_string(seed));
  const std::string ckpt = dir + "/ckpt";
  {
    // The nodes as separate processes (ravnest-launch's command line for each), so that the test sees the last
    // stage's progress lines; ports as the launcher chooses them.
    std::vector<std::string> addr;
    for (int s = 0; s < nodes_count; ++s) addr.push_back("127.0.0.1:" + std::to_string(free_loopback_port()));
    std::vector<std::unique_ptr<testing::Process>> nodes;
    for (int s = 0; s < nodes_count; ++s) {
      std::vector<std::string> args{binary("ravnest-rt"), "--bundle", dir + "/node" + std::to_string(s), "--listen",
                                    addr[s], "--checkpoint-dir", ckpt, "--checkpoint-every", std::to_string(kEvery)};
      for (int o = 0; o < nodes_count; ++o)
        if (o != s) args.insert(args.end(), {"--peer", "node" + std::to_string(o) + "=" + addr[o]});
      nodes.push_back(std::make_unique<testing::Process>(args, kEnv));
    }
    const std::string needle = "\"step\":" + std::to_string(target) + ",";
    EXPECT_TRUE(nodes.back()->wait_for_output(needle, 240)) << "the last stage did not reach step " << target;
    EXPECT_FALSE(held(ckpt, 0).empty()) << "a checkpoint of step 5 should exist before the kill";
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    for (int s : order) nodes[s]->kill_now(SIGKILL);
    for (int s : order) {
      auto killed = nodes[s]->wait(30);
      EXPECT_EQ(killed.signal, SIGKILL) << "node" << s << " ended before the kill:\n" << killed.err;
    }
  }
  std::string left;
  for (int s = 0; s < nodes_count; ++s) {
    left += " node" + std::to_string(s) + ":";
    for (int64_t step : held(ckpt, s)) left += " " + std::to_string(step);
  }
  std::printf("[%s] checkpoints after the kill:%s\n", name.c_str(), left.c_str());

  // Resume to the end.
  auto resumed = run_process({binary("ravnest-launch"), dir, "--quiet", "--checkpoint-dir", ckpt,
                              "--checkpoint-every", std::to_string(kEvery), "--resume", "--save-params",
                              dir + "/resumed", "--losses", dir + "/resumed-losses.txt", "--timeout", "300"},
                             330, kEnv);
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err << resumed.out;
  // Every node resumes from the same step, one the kill left behind mid-run.
  std::set<long long> from;
  std::regex line("resuming from step ([0-9]+) of ([0-9]+)");
  for (std::sregex_iterator it(resumed.err.begin(), resumed.err.end(), line), end; it != end; ++it)
    from.insert(std::stoll((*it)[1]));
  EXPECT_EQ(from.size(), 1u) << "the nodes should resume from one step:\n" << resumed.err;
  const long long start = from.empty() ? -1 : *from.begin();
  std::printf("[%s] resumed from step %lld of %lld\n", name.c_str(), start, static_cast<long long>(kSteps));
  EXPECT_GE(start, kEvery) << "a checkpoint of step " << kEvery << " existed before the kill";
  EXPECT_LT(start, kSteps) << "the kill should land before the run's end (seed " << seed << ")";

  const TrainedRun got = read_run(dir + "/resumed", dir + "/resumed-losses.txt", nodes_count);
  EXPECT_GE(want.params.size(), 8u);
  EXPECT_EQ(got.params.size(), want.params.size());
  for (const auto& [pname, tensor] : want.params) {
    auto it = got.params.find(pname);
    if (it == got.params.end()) {
      ADD_FAILURE() << "the resumed run saved no '" << pname << "'";
      continue;
    }
    if (it->second.shape() != tensor.shape()) {
      ADD_FAILURE() << "parameter " << pname << " has another shape after the resume";
      continue;
    }
    EXPECT_LE(relative_diff(it->second, tensor), 1e-5) << name << ": parameter " << pname << " (seed " << seed << ")";
  }
  // The resumed run ran exactly the steps after its checkpoint, with the uninterrupted run's losses.
  EXPECT_EQ(static_cast<long long>(got.losses.size()), kSteps - start);
  for (const auto& [step, loss] : got.losses) {
    EXPECT_GE(step, start);
    auto it = want.losses.find(step);
    if (it == want.losses.end()) {
      ADD_FAILURE() << "step " << step << " is not a step of the run";
      continue;
    }
    EXPECT_LE(std::abs(loss - it->second), 1e-5 * std::abs(it->second)) << name << ": loss of step " << step;
  }
  return dir;
}

TEST(Resume, KilledMomentumSgdRunResumesToTheUninterruptedParameters) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::vector<std::string> flags = kOneCluster;
  flags.insert(flags.end(), {"--optimizer", "sgd", "--momentum", "0.9"});
  const std::string dir = kill_resume_and_compare("resume-sgd", flags);
  if (HasFailure()) return;

  // A checkpoint of another node is refused, naming the file.
  const std::string ckpt = dir + "/ckpt";
  const std::string theirs = rt::checkpoint_path(rt::checkpoint_node_dir(ckpt, "node0"), kSteps);
  const std::string mine = rt::checkpoint_path(rt::checkpoint_node_dir(ckpt, "node1"), kSteps);
  ASSERT_TRUE(fs::exists(theirs) && fs::exists(mine));
  fs::copy_file(theirs, mine, fs::copy_options::overwrite_existing);
  auto refused = run_process({binary("ravnest-launch"), dir, "--quiet", "--checkpoint-dir", ckpt, "--resume",
                              "--timeout", "120"},
                             150, kEnv);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find(mine), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("of node 'node0'"), std::string::npos) << refused.err;

  // A fresh run into a folder that holds checkpoints is refused instead of mixing two runs.
  auto fresh = run_process({binary("ravnest-launch"), dir, "--quiet", "--checkpoint-dir", ckpt, "--timeout", "120"},
                           150, kEnv);
  EXPECT_EQ(fresh.exit_code, 1);
  EXPECT_NE(fresh.err.find("--resume"), std::string::npos) << fresh.err;
}

TEST(Resume, KilledAdamWRunResumesToTheUninterruptedParameters) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::vector<std::string> flags = kOneCluster;
  flags.insert(flags.end(), {"--optimizer", "adamw", "--lr", "0.002", "--warmup-steps", "5", "--lr-schedule", "cosine"});
  kill_resume_and_compare("resume-adamw", flags);
}

// Two clusters of two stages averaging every 3 steps (checkpoints every 5, so some fall between rounds and carry
// samples not yet averaged): every node of both clusters resumes from the same step, with the uninterrupted run's
// parameters in every copy.
TEST(Resume, KilledTwoClusterRunResumesToTheUninterruptedParameters) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  kill_resume_and_compare("resume-clusters", {"--clusters", "2", "--stages", "2", "--average-every", "3", "--optimizer",
                                              "sgd", "--momentum", "0.9"},
                          4);
}

}  // namespace
}  // namespace ravnest
