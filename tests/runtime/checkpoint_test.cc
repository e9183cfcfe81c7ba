// Checkpoint files: round trip, atomic write (a leftover .tmp is ignored and
// cleaned), refusal of truncated, altered and mismatched files naming the file,
// newest-2 retention, and the pipeline's agreement on a common step.
#include "runtime/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

namespace ravnest::rt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Unique per test and process: ctest runs tests of this file in parallel.
std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir = fs::path(::testing::TempDir()) /
                 ("checkpoint_test_" + std::to_string(getpid()) + "_" + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

Tensor filled(Shape shape, float start) {
  Tensor t = Tensor::empty(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = start + static_cast<float>(i) * 0.25f;
  return t;
}

Checkpoint sample(int64_t step) {
  Checkpoint c;
  c.run_id = "run-abc";
  c.node_id = "node1";
  c.step = step;
  c.epoch = step / 7;
  c.step_in_epoch = step % 7;
  c.updates = step;
  c.samples_since_average = 64;
  c.averaging_rounds = 3;
  c.params["conv.w"] = filled({4, 3}, static_cast<float>(step));
  c.params["bn.running_mean"] = filled({4}, -1.0f);
  c.opt_state["velocity/conv.w"] = filled({4, 3}, 0.5f);
  Tensor count = Tensor::empty(DType::kI64, {});
  *count.data<int64_t>() = step;
  c.opt_state["step/conv.w"] = count;
  return c;
}

bool same(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

std::vector<int64_t> steps_in(const std::string& dir) {
  auto steps = list_checkpoints(dir);
  EXPECT_TRUE(steps.ok()) << steps.status().to_string();
  return steps.ok() ? *steps : std::vector<int64_t>{};
}

TEST(Checkpoint, RoundTripKeepsEveryField) {
  const std::string dir = temp_dir();
  const Checkpoint want = sample(10);
  ASSERT_TRUE(write_checkpoint(dir, want).ok());
  EXPECT_TRUE(fs::exists(dir + "/ckpt-10.rvt"));
  EXPECT_FALSE(fs::exists(dir + "/ckpt-10.rvt.tmp"));
  auto got = read_checkpoint(checkpoint_path(dir, 10));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(got->run_id, want.run_id);
  EXPECT_EQ(got->node_id, want.node_id);
  EXPECT_EQ(got->step, 10);
  EXPECT_EQ(got->epoch, 1);
  EXPECT_EQ(got->step_in_epoch, 3);
  EXPECT_EQ(got->updates, 10);
  EXPECT_EQ(got->samples_since_average, 64);
  EXPECT_EQ(got->averaging_rounds, 3);
  ASSERT_EQ(got->params.size(), 2u);
  ASSERT_EQ(got->opt_state.size(), 2u);
  for (const auto& [name, t] : want.params) EXPECT_TRUE(same(got->params.at(name), t)) << name;
  for (const auto& [name, t] : want.opt_state) EXPECT_TRUE(same(got->opt_state.at(name), t)) << name;
  EXPECT_TRUE(check_checkpoint(*got, "x", "run-abc", "node1", want.params, want.opt_state).ok());
}

TEST(Checkpoint, LeftoverTmpIsIgnoredAndRemovedByTheNextWrite) {
  const std::string dir = temp_dir();
  ASSERT_TRUE(write_checkpoint(dir, sample(5)).ok());
  // A crash in the middle of writing step 10 leaves only its .tmp.
  std::ofstream(dir + "/ckpt-10.rvt.tmp", std::ios::binary) << "RVNTENS1 half a file";
  std::ofstream(dir + "/notes.txt") << "not a checkpoint";
  EXPECT_EQ(steps_in(dir), std::vector<int64_t>{5});
  ASSERT_TRUE(write_checkpoint(dir, sample(15)).ok());
  EXPECT_EQ(steps_in(dir), (std::vector<int64_t>{5, 15}));
  EXPECT_FALSE(fs::exists(dir + "/ckpt-10.rvt.tmp"));
  EXPECT_TRUE(fs::exists(dir + "/notes.txt"));  // only checkpoint files are touched
}

TEST(Checkpoint, MissingFolderHasNoCheckpoints) {
  EXPECT_TRUE(steps_in(temp_dir() + "/never-written").empty());
}

TEST(Checkpoint, TruncatedFileIsRefusedNamingIt) {
  const std::string dir = temp_dir();
  ASSERT_TRUE(write_checkpoint(dir, sample(5)).ok());
  const std::string path = checkpoint_path(dir, 5);
  fs::resize_file(path, fs::file_size(path) - 7);
  auto got = read_checkpoint(path);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kCorrupt);
  EXPECT_NE(got.status().message().find(path), std::string::npos) << got.status().message();
  EXPECT_NE(got.status().message().find("truncated"), std::string::npos) << got.status().message();
}

TEST(Checkpoint, AlteredByteIsRefusedByTheDigest) {
  const std::string dir = temp_dir();
  ASSERT_TRUE(write_checkpoint(dir, sample(5)).ok());
  const std::string path = checkpoint_path(dir, 5);
  // Flip a byte inside the data of 'param/conv.w': the structure stays valid, only the digest can tell.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string name = "param/conv.w";
  const size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  const size_t data = at + name.size() + 4 + 4 + 2 * 8 + 8;  // dtype, rank, 2 dims, nbytes
  ASSERT_LT(data + 4, bytes.size());
  bytes[data + 2] = static_cast<char>(bytes[data + 2] ^ 0x10);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  auto got = read_checkpoint(path);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kCorrupt);
  EXPECT_NE(got.status().message().find(path), std::string::npos) << got.status().message();
  EXPECT_NE(got.status().message().find("SHA-256"), std::string::npos) << got.status().message();
}

TEST(Checkpoint, NotACheckpointIsRefusedNamingIt) {
  const std::string dir = temp_dir();
  const std::string path = dir + "/ckpt-3.rvt";
  std::ofstream(path, std::ios::binary) << "garbage";
  auto got = read_checkpoint(path);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find(path), std::string::npos) << got.status().message();
}

TEST(Checkpoint, KeepsTheNewestTwo) {
  const std::string dir = temp_dir();
  for (int64_t step : {5, 10, 15, 20}) ASSERT_TRUE(write_checkpoint(dir, sample(step)).ok());
  EXPECT_EQ(steps_in(dir), (std::vector<int64_t>{15, 20}));
  // After a resume from 15 the timeline restarts there: step 20 of the old one goes when 15 is rewritten.
  ASSERT_TRUE(write_checkpoint(dir, sample(15)).ok());
  EXPECT_EQ(steps_in(dir), std::vector<int64_t>{15});
  ASSERT_TRUE(write_checkpoint(dir, sample(20)).ok());
  EXPECT_EQ(steps_in(dir), (std::vector<int64_t>{15, 20}));
  auto got = read_checkpoint(checkpoint_path(dir, 20));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(got->step, 20);
}

TEST(Checkpoint, MismatchedRunNodeOrShapesAreRefusedNamingTheFile) {
  const Checkpoint c = sample(5);
  const std::string path = "/ckpts/node1/ckpt-5.rvt";
  auto refused = [&](const Status& st, const std::string& needle) {
    ASSERT_FALSE(st.ok()) << needle;
    EXPECT_EQ(st.code(), Code::kInvalidArgument);
    EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
  };
  refused(check_checkpoint(c, path, "run-other", "node1", c.params, c.opt_state), "run 'run-abc'");
  refused(check_checkpoint(c, path, "run-abc", "node2", c.params, c.opt_state), "node 'node1'");
  TensorMap params = c.params;
  params["conv.w"] = filled({4, 4}, 0);
  refused(check_checkpoint(c, path, "run-abc", "node1", params, c.opt_state), "'conv.w'");
  params = c.params;
  params["fc.w"] = filled({2}, 0);
  refused(check_checkpoint(c, path, "run-abc", "node1", params, c.opt_state), "no parameter 'fc.w'");
  TensorMap opt = c.opt_state;
  opt.erase("step/conv.w");
  refused(check_checkpoint(c, path, "run-abc", "node1", c.params, opt), "'step/conv.w'");
}

// Nodes agree over real loopback connections: the newest step all hold, or -1. `stages` nodes per cluster
// (node c * stages + s is cluster c's stage s); with several clusters, the stages listed in `ringed` are
// averaging-ring members, each connected to its counterparts in the other clusters.
std::vector<int64_t> agree(const std::vector<std::vector<int64_t>>& held, size_t stages = 0,
                           const std::set<size_t>& ringed = {}) {
  const size_t n = held.size();
  if (stages == 0) stages = n;
  const size_t clusters = n / stages;
  std::vector<std::unique_ptr<Transport>> nodes;
  std::vector<PeerAddress> addr;
  for (size_t i = 0; i < n; ++i) {
    TransportOptions o;
    o.node_id = "node" + std::to_string(i);
    o.run_id = "run-abc";
    nodes.push_back(std::make_unique<Transport>(o));
    EXPECT_TRUE(nodes[i]->listen("127.0.0.1", 0).ok());
    addr.push_back({o.node_id, "127.0.0.1", nodes[i]->port()});
  }
  auto link = [&](size_t a, size_t b) {  // a dials b
    EXPECT_TRUE(nodes[a]->connect(addr[b].id, "127.0.0.1", addr[b].port, deadline_after(10s)).ok());
    EXPECT_TRUE(nodes[b]->wait_for_peer(addr[a].id, deadline_after(10s)).ok());
  };
  std::vector<std::vector<std::string>> others(n);
  for (size_t c = 0; c < clusters; ++c)
    for (size_t s = 0; s < stages; ++s) {
      const size_t i = c * stages + s;
      if (s + 1 < stages) link(i, i + 1);
      if (clusters < 2 || !ringed.count(s)) continue;
      for (size_t d = 0; d < clusters; ++d) {
        if (d == c) continue;
        others[i].push_back(addr[d * stages + s].id);
        if (d > c) link(i, d * stages + s);
      }
    }
  std::vector<int64_t> chosen(n, -2);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      std::optional<PeerAddress> prev, next;
      if (i % stages > 0) prev = addr[i - 1];
      if (i % stages + 1 < stages) next = addr[i + 1];
      auto r = agree_on_checkpoint(*nodes[i], prev, next, held[i], others[i], clusters > 1, deadline_after(10s));
      EXPECT_TRUE(r.ok()) << r.status().to_string();
      if (r.ok()) chosen[i] = *r;
    });
  for (auto& t : threads) t.join();
  return chosen;
}

TEST(Checkpoint, StagesAgreeOnTheNewestCommonStep) {
  // The first stage ran ahead (holds 15), the last lagged (still holds 5).
  EXPECT_EQ(agree({{10, 15}, {10, 15}, {5, 10}}), (std::vector<int64_t>{10, 10, 10}));
  EXPECT_EQ(agree({{5, 10}, {5, 10}, {5, 10}}), (std::vector<int64_t>{10, 10, 10}));
  EXPECT_EQ(agree({{5}, {}, {5}}), (std::vector<int64_t>{-1, -1, -1}));
  EXPECT_EQ(agree({{20}}), std::vector<int64_t>{20});
}

TEST(Checkpoint, ClustersAgreeOnTheNewestStepEveryNodeHolds) {
  // Two clusters of two stages, both stages in rings: cluster 1's second stage lags.
  EXPECT_EQ(agree({{8, 16}, {8, 16}, {8, 16}, {8}}, 2, {0, 1}), (std::vector<int64_t>(4, 8)));
  // Only stage 1 averages (stage 0 holds no parameters): stage 0 learns the run's choice through the pipeline.
  EXPECT_EQ(agree({{8, 16}, {8, 16}, {16}, {8, 16}}, 2, {1}), (std::vector<int64_t>(4, 16)));
  // Three clusters of three stages, rings at stages 0 and 2; cluster 2's middle stage holds none in common.
  EXPECT_EQ(agree({{4, 8}, {4, 8}, {4, 8}, {4, 8}, {8}, {4, 8}, {4, 8}, {4}, {4, 8}}, 3, {0, 2}),
            (std::vector<int64_t>(9, -1)));
  EXPECT_EQ(agree({{4, 8}, {4, 8}, {4, 8}, {4, 8}, {4}, {4, 8}, {4, 8}, {4, 8}, {4, 8}}, 3, {0, 2}),
            (std::vector<int64_t>(9, 4)));
}

}  // namespace
}  // namespace ravnest::rt
