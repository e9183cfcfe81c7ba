// Data parallelism across clusters: periodic parameter averaging over the
// compiler's ring plan, with real processes on loopback.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "runtime/tensor_file.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;

std::string compile(const std::string& name, const std::vector<std::string>& extra) {
  std::string dir = testing::temp_dir(name);
  std::vector<std::string> args{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = run_process(args, 120);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir;
}

std::map<std::string, rt::Tensor> load(const std::string& dir, const std::vector<std::string>& nodes) {
  std::map<std::string, rt::Tensor> params;
  for (const auto& node : nodes) {
    auto file = rt::read_tensor_file(dir + "/params/" + node + ".rvt");
    EXPECT_TRUE(file.ok()) << file.status().to_string();
    if (file.ok())
      for (auto& [k, v] : *file) params[k] = v;
  }
  return params;
}

// Every tensor of `want` is in `got` with the same shape and bytes.
void expect_identical(const std::map<std::string, rt::Tensor>& want, const std::map<std::string, rt::Tensor>& got,
                      const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (const auto& [name, t] : want) {
    ASSERT_TRUE(got.count(name)) << what << ": no " << name;
    ASSERT_EQ(got.at(name).shape(), t.shape()) << what << ": " << name;
    EXPECT_EQ(std::memcmp(got.at(name).raw(), t.raw(), t.bytes()), 0) << what << ": " << name << " differs";
  }
}

// Clusters of one stage each (node c is cluster c): every copy ends identical to cluster 0's.
void expect_one_stage_clusters_identical(const std::string& dir, int clusters) {
  const auto first = load(dir, {"node0"});
  ASSERT_EQ(first.size(), 8u);
  for (int c = 1; c < clusters; ++c)
    expect_identical(first, load(dir, {"node" + std::to_string(c)}), "cluster " + std::to_string(c) + " against cluster 0");
}

// A cluster of 2 stages beside a cluster of 3: the parameter space is cut at
// the union of both partitions (3 rings), and after the last round every copy
// of every parameter is the same.
TEST(Clusters, DifferentlyPartitionedClustersEndIdentical) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile("clusters23", {"--stages", "2,3", "--average-every", "5", "--batch", "32",
                                           "--microbatches", "2", "--steps", "12", "--no-eval"});
  auto r = run_process({binary("ravnest-launch"), dir, "--quiet", "--save-params", dir + "/params", "--timeout", "240"},
                       300, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto a = load(dir, {"node0", "node1"});
  auto b = load(dir, {"node2", "node3", "node4"});
  ASSERT_EQ(a.size(), 8u);
  expect_identical(a, b, "the 3-stage cluster against the 2-stage one");
}

// BatchNorm running statistics are averaged with the parameters: ResNet-50
// (small) in a 2-stage beside a 3-stage cluster, both cut by the DAG partitioner,
// ends with every parameter and every running statistic identical.
TEST(Clusters, RunningStatisticsAveragedAcrossDifferentSplits) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = testing::temp_dir("clusters_bn");
  auto c = run_process({binary("ravnestc"), "compile", source_path("models/resnet50/resnet50_small.onnx"), "-o", dir,
                        "--stages", "2,3", "--average-every", "2", "--batch", "32", "--steps", "4", "--no-eval"},
                       120);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto r = run_process({binary("ravnest-launch"), dir, "--quiet", "--save-params", dir + "/params", "--timeout", "240"},
                       300, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto a = load(dir, {"node0", "node1"});
  auto b = load(dir, {"node2", "node3", "node4"});
  ASSERT_EQ(a.size(), b.size());
  int running = 0;
  for (const auto& [name, t] : a) running += name.find("running_") != std::string::npos;
  expect_identical(a, b, "cluster 1 against cluster 0");
  EXPECT_GT(running, 0) << "the saved parameters hold no BatchNorm statistics";
}

// --average-optimizer-state: the momentum buffers are averaged with the
// parameters, so after the final round the two clusters hold the same optimizer
// state too (read from their final checkpoints); without it they keep their own.
TEST(Clusters, OptimizerStateAveragedOnRequest) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  for (bool average : {false, true}) {
    std::string dir = testing::temp_dir(average ? "optavg_on" : "optavg_off");
    std::vector<std::string> args{binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir,
                                  "--clusters", "2", "--stages", "1", "--average-every", "2", "--batch", "32",
                                  "--steps", "4", "--no-eval", "--momentum", "0.9"};
    if (average) args.push_back("--average-optimizer-state");
    auto c = run_process(args, 120);
    ASSERT_EQ(c.exit_code, 0) << c.err;
    auto r = run_process({binary("ravnest-launch"), dir, "--quiet", "--checkpoint-dir", dir + "/ckpt", "--timeout",
                          "240"},
                         300, {"OMP_NUM_THREADS=1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto a = rt::read_tensor_file(dir + "/ckpt/node0/ckpt-4.rvt");
    auto b = rt::read_tensor_file(dir + "/ckpt/node1/ckpt-4.rvt");
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    std::map<std::string, rt::Tensor> other(b->begin(), b->end());
    int compared = 0, equal = 0;
    for (const auto& [name, t] : *a) {
      if (name.rfind("opt/velocity/", 0) != 0) continue;
      ASSERT_TRUE(other.count(name)) << name;
      ++compared;
      equal += std::memcmp(other.at(name).raw(), t.raw(), t.bytes()) == 0;
    }
    EXPECT_EQ(compared, 8);
    if (average) {
      EXPECT_EQ(equal, compared) << "momentum differs between the clusters after averaging it";
    } else {
      EXPECT_EQ(equal, 0) << "momentum should stay each cluster's own";
    }
  }
}

// The flexible update rule: cluster 0 (slow) does 2 local steps per round,
// cluster 1 (fast) 4; both run 16 / 4 = 4 rounds, so cluster 0 trains 8 steps
// and cluster 1 16, each averaged in weighted by its samples, and every copy of
// every parameter ends the same.
TEST(Clusters, FlexibleLocalStepsPerCluster) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile("flexible", {"--stages", "2,1", "--local-steps", "2,4", "--batch", "32", "--microbatches",
                                         "2", "--steps", "16", "--no-eval"});
  auto r = run_process({binary("ravnest-launch"), dir, "--quiet", "--save-params", dir + "/params", "--losses",
                        dir + "/losses.txt", "--timeout", "240"},
                       300, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream losses(dir + "/losses.txt");
  int lines = 0;
  for (std::string line; std::getline(losses, line);) lines += !line.empty();
  EXPECT_EQ(lines, 8) << "cluster 0 (2 local steps per round) should train 4 rounds x 2 steps";
  auto a = load(dir, {"node0", "node1"});
  auto b = load(dir, {"node2"});
  ASSERT_EQ(a.size(), 8u);
  expect_identical(a, b, "cluster 1 against cluster 0");
}

double final_accuracy(const std::string& out) {
  std::smatch match;
  if (!std::regex_search(out, match, std::regex(R"(final epoch 1: test accuracy ([0-9.]+)%)"))) return -1;
  return std::stod(match[1]);
}

// Two clusters of 2 stages, each on its half of Fashion-MNIST, averaging every
// 4 steps, reach within 1 point of one cluster on the whole epoch — also with
// the averaging compressed to top-5% deltas with error feedback, which must cut
// the averaging bytes at least 8x. Each cluster takes half the steps, so the
// learning rate follows the linear scaling rule (2 clusters: 2x), as
// docs/training.md says.
TEST(Clusters, TwoClustersOnHalvesMatchOneCluster) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string one = compile("one_cluster", {"--stages", "2", "--batch", "64", "--microbatches", "4", "--lr", "0.01"});
  std::string two = compile("two_clusters", {"--clusters", "2", "--stages", "2", "--average-every", "4", "--batch",
                                             "64", "--microbatches", "4", "--lr", "0.02"});
  auto r1 = run_process({binary("ravnest-launch"), one, "--timeout", "900"}, 960);
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  auto r2 = run_process({binary("ravnest-launch"), two, "--timeout", "900"}, 960);
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  std::string topk = compile("two_clusters_topk", {"--clusters", "2", "--stages", "2", "--average-every", "4",
                                                  "--batch", "64", "--microbatches", "4", "--lr", "0.02",
                                                  "--compress-averaging", "topk:0.05"});
  auto r3 = run_process({binary("ravnest-launch"), topk, "--timeout", "900"}, 960);
  ASSERT_EQ(r3.exit_code, 0) << r3.err;
  double a1 = final_accuracy(r1.out), a2 = final_accuracy(r2.out), a3 = final_accuracy(r3.out);
  ASSERT_GT(a1, 0) << r1.out;
  ASSERT_GT(a2, 0) << r2.out;
  ASSERT_GT(a3, 0) << r3.out;
  RecordProperty("one_cluster_accuracy", std::to_string(a1));
  RecordProperty("two_cluster_accuracy", std::to_string(a2));
  RecordProperty("two_cluster_topk_accuracy", std::to_string(a3));
  EXPECT_GE(a2, a1 - 1.0) << "one cluster " << a1 << "%, two clusters " << a2 << "%";
  EXPECT_GE(a3, a1 - 1.0) << "one cluster " << a1 << "%, two clusters with top-k averaging " << a3 << "%";
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r3.out, m, std::regex(R"(averaging ([0-9.]+) MB \(dense ([0-9.]+)\))"))) << r3.out;
  const double sent = std::stod(m[1]), dense = std::stod(m[2]);
  EXPECT_GT(sent, 0);
  EXPECT_LE(sent * 8, dense) << "top-k averaging sent " << sent << " MB against " << dense << " MB dense";
}


// Three clusters cut three ways: rings of three members are ordered by links
// measured at start and re-probed at every round (--replan-every 1; every
// member must reach the same order and the same re-plan decisions), and every
// copy ends identical.
TEST(Clusters, ThreeClustersOrderTheirRingsAndEndIdentical) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile("clusters121", {"--stages", "1,2,1", "--average-every", "3", "--batch", "32",
                                            "--microbatches", "2", "--steps", "9", "--no-eval", "--replan-every",
                                            "1"});
  auto r = run_process({binary("ravnest-launch"), dir, "--save-params", dir + "/params", "--timeout", "240"}, 300,
                       {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Each ring's members logged the same measured order.
  std::smatch m;
  std::string err = r.err;
  std::map<std::string, std::set<std::string>> orders;  // ring -> orders seen
  std::regex line(R"(ring ([0-9]+) ordered by measured links: ([a-z0-9 >-]+) \()");
  for (auto it = std::sregex_iterator(err.begin(), err.end(), line); it != std::sregex_iterator(); ++it)
    orders[(*it)[1]].insert((*it)[2]);
  ASSERT_EQ(orders.size(), 2u) << r.err;
  for (const auto& [ring, seen] : orders) EXPECT_EQ(seen.size(), 1u) << "ring " << ring << " members disagree";
  auto a = load(dir, {"node0"});
  auto b = load(dir, {"node1", "node2"});
  auto c = load(dir, {"node3"});
  ASSERT_EQ(a.size(), 8u);
  expect_identical(a, b, "cluster 1 against cluster 0");
  expect_identical(a, c, "cluster 2 against cluster 0");
}

// Adaptive routing's re-plan branch: three clusters of one stage (one ring of three),
// re-probed every round over emulated links; 6 s into the run (start-up takes 1-4 s)
// node1's access link drops to a quarter of its rate, so the hops of the ring's
// current order through node1 get more than 2x slower. Every member re-plans at the same round (the decision
// comes from the same measured matrix), and the copies still end identical.
TEST(Clusters, RingIsReplannedWhenAHopSlowsDown) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile("clusters-replan", {"--stages", "1,1,1", "--average-every", "4", "--batch", "32",
                                                "--microbatches", "2", "--steps", "120", "--no-eval", "--replan-every",
                                                "1"});
  const std::string links = dir + "/links.json";
  // The slowdown must come after the start-up's probe, which takes 1-2 s on a quiet machine and up to about
  // 4 s on a loaded one; the run lasts well past it.
  std::ofstream(links) << R"({"default": {"up_mbit": 200, "down_mbit": 200, "delay_ms": 1},
                              "nodes": {"node1": {"changes": [{"at_s": 6, "rate_scale": 0.25}]}}})";
  auto r = run_process({binary("ravnest-launch"), dir, "--links", links, "--save-params", dir + "/params", "--timeout",
                        "240"},
                       300, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, std::set<std::string>> replans;  // node -> steps it re-planned after
  std::regex line(R"(\[(node[0-9]) info\] ring 0 re-planned after step ([0-9]+))");
  for (auto it = std::sregex_iterator(r.err.begin(), r.err.end(), line); it != std::sregex_iterator(); ++it)
    replans[(*it)[1]].insert((*it)[2]);
  ASSERT_EQ(replans.size(), 3u) << "every member re-plans: " << r.err;
  EXPECT_EQ(replans["node0"], replans["node1"]);
  EXPECT_EQ(replans["node0"], replans["node2"]);
  expect_one_stage_clusters_identical(dir, 3);
}

// Late clusters (--late-deadline): three clusters of one stage averaging every 2 steps; the third
// cluster's process is frozen (SIGSTOP) for 3 s mid-run, far past the 0.3 s deadline (and below the
// heartbeat floor, so it is late, not failed). The rounds go on without it (the coordinators report it
// late), it is averaged in at later rounds, and the last round, which waits for everyone, leaves every
// copy identical.
TEST(Clusters, LateClusterIsAveragedInLaterAndAllEndIdentical) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile("clusters-late", {"--clusters", "3", "--stages", "1", "--average-every", "2", "--batch",
                                              "32", "--microbatches", "2", "--steps", "300", "--no-eval",
                                              "--late-deadline", "0.3"});
  testing::Process launch({binary("ravnest-launch"), dir, "--save-params", dir + "/params", "--timeout", "240"},
                          {"OMP_NUM_THREADS=1"});
  ASSERT_TRUE(launch.wait_for_output("step ", 120)) << "no progress";
  std::vector<int> late = testing::ravnest_rt_pids(dir + "/node2 ");
  ASSERT_EQ(late.size(), 1u) << "cluster 2's node not found";
  kill(late[0], SIGSTOP);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  kill(late[0], SIGCONT);
  auto r = launch.wait(240);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(late: node2 missed ([0-9]+) ring rounds)"))) << r.out;
  RecordProperty("rounds_missed", m[1].str());
  std::printf("node2 missed %s rounds\n", m[1].str().c_str());
  EXPECT_NE(r.out.find("done: 300 steps"), std::string::npos) << r.out;
  expect_one_stage_clusters_identical(dir, 3);
}

}  // namespace
}  // namespace ravnest
