// Whole-cluster failure (docs/faults.md): two clusters of two stages average
// every few steps; both processes of one cluster are killed with SIGKILL in the
// middle of the run. The other cluster's ring members agree that it is lost,
// drop it from their rings and train to the end; its accuracy then matches a
// single-cluster run of the same steps.
#include <gtest/gtest.h>
#include <signal.h>

#include <random>
#include <regex>
#include <string>
#include <vector>

#include "common/ports.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;

constexpr int kSteps = 120;

std::string compile(const std::string& name, const std::vector<std::string>& extra, int steps = kSteps) {
  std::string dir = testing::temp_dir(name);
  std::vector<std::string> args{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir,
                                "--batch", "64", "--microbatches", "4", "--lr", "0.02", "--steps",
                                std::to_string(steps)};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = run_process(args, 120);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir;
}

// The last match of `pattern`'s first group in `out` as a number, or -1.
double last_number(const std::string& out, const std::string& pattern) {
  double value = -1;
  std::regex re(pattern);
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator(); ++it)
    value = std::stod((*it)[1]);
  return value;
}

TEST(ClusterLoss, SurvivorsFinishAndMatchOneCluster) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  // Nodes 0, 1 are cluster 0's stages; 2, 3 cluster 1's.
  std::vector<std::string> address;
  for (int i = 0; i < 4; ++i) address.push_back("127.0.0.1:" + std::to_string(free_loopback_port()));
  const std::string two = compile("cluster-loss", {"--clusters", "2", "--stages", "2", "--average-every", "4"});
  std::vector<std::unique_ptr<testing::Process>> nodes;
  for (int i = 0; i < 4; ++i) {
    std::vector<std::string> argv{binary("ravnest-rt"), "--bundle", two + "/node" + std::to_string(i), "--listen",
                                  address[static_cast<size_t>(i)], "--recv-timeout", "20"};
    for (int j = 0; j < 4; ++j)
      if (j != i) argv.insert(argv.end(), {"--peer", "node" + std::to_string(j) + "=" + address[static_cast<size_t>(j)]});
    nodes.push_back(std::make_unique<testing::Process>(argv, std::vector<std::string>{"OMP_NUM_THREADS=1"}));
  }
  // Kill cluster 1 at a random step between 10 and 40 (the seed is logged to replay a failure).
  const unsigned seed = std::random_device{}();
  const int kill_at = 10 + static_cast<int>(std::mt19937(seed)() % 31);
  RecordProperty("seed", std::to_string(seed));
  RecordProperty("kill_at_step", std::to_string(kill_at));
  std::printf("seed %u: killing cluster 1 at step %d\n", seed, kill_at);
  ASSERT_TRUE(nodes[3]->wait_for_output("\"step\":" + std::to_string(kill_at) + ",", 120))
      << "cluster 1 did not reach step " << kill_at;
  nodes[2]->kill_now(SIGKILL);
  nodes[3]->kill_now(SIGKILL);
  auto r0 = nodes[0]->wait(240);
  auto r1 = nodes[1]->wait(240);
  EXPECT_FALSE(r0.timed_out);
  EXPECT_FALSE(r1.timed_out);
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  // Both stages of cluster 0 report the loss, and cluster 0 trained to the last step.
  EXPECT_NE(r0.out.find("\"event\":\"cluster_lost\",\"node\":\"node0\",\"cluster\":1"), std::string::npos) << r0.out;
  EXPECT_NE(r1.out.find("\"event\":\"cluster_lost\",\"node\":\"node1\",\"cluster\":1"), std::string::npos) << r1.out;
  EXPECT_NE(r1.out.find("\"step\":" + std::to_string(kSteps) + ","), std::string::npos) << r1.out;
  EXPECT_NE(r0.err.find("cluster 1 is lost"), std::string::npos) << r0.err;
  nodes[2]->wait(5);
  nodes[3]->wait(5);

  const std::string one = compile("cluster-loss-one", {"--stages", "2"});
  auto single = run_process({binary("ravnest-launch"), one, "--timeout", "240"}, 300, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(single.exit_code, 0) << single.err;
  // A node prints eval events (a fraction), the launcher a summary line (percent).
  const double survived = last_number(r1.out, R"("event":"eval"[^}]*"accuracy":([0-9.]+))");
  const double alone = last_number(single.out, R"(final epoch 1: test accuracy ([0-9.]+)%)") / 100;
  RecordProperty("survivor_accuracy", std::to_string(survived));
  RecordProperty("single_cluster_accuracy", std::to_string(alone));
  std::printf("accuracy after %d steps: surviving cluster %.4f, one cluster %.4f\n", kSteps, survived, alone);
  ASSERT_GT(survived, 0) << r1.out;
  ASSERT_GT(alone, 0) << single.out;
  EXPECT_NEAR(survived, alone, 0.02);
}

// The same through ravnest-launch: a killed cluster ends only itself; the launcher names it and
// succeeds with the other cluster's result.
TEST(ClusterLoss, LauncherKeepsTheOtherCluster) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  // Long enough (400 steps, about 30 s here) that the kill lands mid-run.
  constexpr int kLaunchSteps = 400;
  const std::string two =
      compile("cluster-loss-launch", {"--clusters", "2", "--stages", "2", "--average-every", "4"}, kLaunchSteps);
  testing::Process launch({binary("ravnest-launch"), two, "--timeout", "240"}, {"OMP_NUM_THREADS=1"});
  // Cluster 1's two processes, once both run, then a few seconds of training.
  std::vector<int> victims;
  for (int tries = 0; tries < 600 && victims.size() < 2; ++tries) {
    victims.clear();
    for (const char* node : {"/node2", "/node3"})
      for (int pid : testing::ravnest_rt_pids(two + node)) victims.push_back(pid);
    launch.wait_for_output("\n", 0.1);
  }
  ASSERT_EQ(victims.size(), 2u) << "cluster 1's two processes not found";
  launch.wait_for_output("never printed", 6);
  for (int pid : victims) kill(pid, SIGKILL);
  auto r = launch.wait(300);
  EXPECT_FALSE(r.timed_out);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.err.find("cluster 1 is lost, the others train on"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("cluster 1 was lost"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step " + std::to_string(kLaunchSteps) + "/" + std::to_string(kLaunchSteps)), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("final epoch 1: test accuracy"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace ravnest
