// compile_model with a devices file: stages balanced to machines of different
// speeds, the memory model's error when a machine is too small, clusters of
// similar machines with their profile addresses in the manifests, and the
// report (report.txt, report.html) naming every machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

#include "codegen/compile.h"
#include "common/json.h"
#include "frontend/import.h"
#include "partitioner/cost_model.h"
#include "partitioner/devices.h"

namespace ravnest::cg {
namespace {

namespace fs = std::filesystem;

std::string source(const std::string& rel) { return std::string(RAVNEST_SOURCE_DIR) + "/" + rel; }

std::string fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("ravnest-devices-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Three machines whose throughputs (GEMM, conv and memory bandwidth) are 1:2:4,
// joined by fast links; `slow_memory` bytes on the slowest.
std::string write_devices_124(const std::string& dir, int64_t slow_memory = 8000000000) {
  const std::string path = dir + "/devices.json";
  std::ofstream out(path);
  out << R"({"devices": [
 {"id": "slow", "address": "127.0.0.1:31001", "kind": "cpu", "cores": 2, "gemm_gflops": 20, "conv_gflops": 20,
  "memory_bandwidth_gbps": 5, "memory_bytes": )" << slow_memory << R"(},
 {"id": "mid", "address": "127.0.0.1:31002", "kind": "cpu", "cores": 2, "gemm_gflops": 40, "conv_gflops": 40,
  "memory_bandwidth_gbps": 10, "memory_bytes": 8000000000},
 {"id": "fast", "address": "127.0.0.1:31003", "kind": "cpu", "cores": 2, "gemm_gflops": 80, "conv_gflops": 80,
  "memory_bandwidth_gbps": 20, "memory_bytes": 8000000000}],
 "links": [{"a": "slow", "b": "mid", "bandwidth_bps": 1e11, "latency_s": 1e-6},
  {"a": "mid", "b": "fast", "bandwidth_bps": 1e11, "latency_s": 1e-6},
  {"a": "slow", "b": "fast", "bandwidth_bps": 1e11, "latency_s": 1e-6}]})";
  return path;
}

CompileOptions options_for(const std::string& model, const std::string& devices, const std::string& out) {
  CompileOptions o;
  o.model_path = source(model);
  o.out_dir = out;
  o.devices_path = devices;
  o.batch = 256;
  o.microbatches = 4;
  o.training.max_steps = 1;
  return o;
}

double stage_total(const StageReport& s) { return s.compute_s() + s.transfer_s; }

// Compiles `model` for the 1:2:4 machines in one 3-stage pipeline.
Result<CompileSummary> compile_124(const std::string& model, const std::string& name) {
  const std::string dir = fresh_dir(name);
  CompileOptions o = options_for(model, write_devices_124(dir), dir + "/out");
  o.device_clusters = 1;
  o.device_stages = 3;
  std::ostringstream report;
  return compile_model(o, report);
}

// The stages use every machine once and their predicted times are within 10% of each other.
void expect_balanced(const std::string& model, const std::string& name) {
  auto summary = compile_124(model, name);
  ASSERT_TRUE(summary.ok()) << summary.status().to_string();
  ASSERT_EQ(summary->report.clusters.size(), 1u);
  const auto& stages = summary->report.clusters[0].stages;
  ASSERT_EQ(stages.size(), 3u);
  std::vector<std::string> machines;
  double slowest = 0, fastest = 1e30;
  for (const StageReport& s : stages) {
    machines.push_back(s.machine);
    slowest = std::max(slowest, stage_total(s));
    fastest = std::min(fastest, stage_total(s));
    EXPECT_GT(s.compute_s(), 0) << model << " stage " << s.stage;
  }
  std::sort(machines.begin(), machines.end());
  EXPECT_EQ(machines, (std::vector<std::string>{"fast", "mid", "slow"}));
  EXPECT_LE((slowest - fastest) / slowest, 0.10) << model << ": predicted stage times " << stage_total(stages[0])
                                                  << ", " << stage_total(stages[1]) << ", " << stage_total(stages[2]);
}

TEST(DevicesCompile, Speeds124BalanceBertSmall) { expect_balanced("models/bert/bert_small.onnx", "bert124"); }

TEST(DevicesCompile, Speeds124BalanceInception) {
  expect_balanced("models/inception_v3/inception_v3_small.onnx", "inception124");
}

// The CNN's second convolution is ~80% of its work and cannot be split, so the
// 1:2:4 machines cannot be balanced; the split must reach the best possible
// bottleneck instead: max(whole model on the three machines together, the
// largest op on the fastest machine), within 10%.
TEST(DevicesCompile, Speeds124CnnReachesTheIndivisibleOpBound) {
  auto summary = compile_124("models/cnn/cnn.onnx", "cnn124");
  ASSERT_TRUE(summary.ok()) << summary.status().to_string();
  const auto& stages = summary->report.clusters.at(0).stages;
  ASSERT_EQ(stages.size(), 3u);
  double bottleneck = 0;
  for (const StageReport& s : stages) bottleneck = std::max(bottleneck, stage_total(s));

  fe::ImportOptions io;
  io.batch = 64;
  auto model = fe::import_model(source("models/cnn/cnn.onnx"), io);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  auto devices = part::load_devices(write_devices_124(fresh_dir("cnn124-bound")));
  ASSERT_TRUE(devices.ok()) << devices.status().to_string();
  double rate = 0, largest_on_fast = 0;
  for (const part::DeviceProfile& d : devices->devices) {
    double total = 0;
    for (const part::PassTimes& t : part::graph_times(*model, d)) {
      total += t.total();
      if (d.id == "fast") largest_on_fast = std::max(largest_on_fast, t.total());
    }
    rate += 1 / total;
  }
  const double bound = std::max(1 / rate, largest_on_fast);
  EXPECT_GE(bottleneck, bound * 0.999);
  EXPECT_LE(bottleneck, bound * 1.10) << "bound " << bound;
  // The big convolution runs on the fastest machine.
  for (const StageReport& s : stages) {
    if (s.nodes.find("/conv2/Conv") != std::string::npos) {
      EXPECT_EQ(s.machine, "fast");
    }
  }
}

TEST(DevicesCompile, TooLittleMemoryIsTheMemoryModelsError) {
  const std::string dir = fresh_dir("memory");
  CompileOptions o = options_for("models/cnn/cnn.onnx", write_devices_124(dir, 100000), dir + "/out");
  o.device_stages = 3;
  std::ostringstream report;
  auto summary = compile_model(o, report);
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.status().code(), Code::kResourceExhausted) << summary.status().to_string();
  const std::string& m = summary.status().message();
  EXPECT_NE(m.find("'slow'"), std::string::npos) << m;
  EXPECT_NE(m.find("short by"), std::string::npos) << m;
  EXPECT_NE(m.find("has 100000"), std::string::npos) << m;
  EXPECT_FALSE(fs::exists(dir + "/out/node0/manifest.json"));
}

// models/devices/mixed_8.json: 4 desktops and 4 laptops. Two clusters of four
// group the similar machines; every manifest carries its machine's address, and
// its neighbours' addresses are those of its pipeline neighbours.
TEST(DevicesCompile, EightMachinesFormTwoClustersWithProfileAddresses) {
  const std::string dir = fresh_dir("mixed8");
  const std::string devices_path = source("models/devices/mixed_8.json");
  CompileOptions o = options_for("models/cnn/cnn.onnx", devices_path, dir);
  o.batch = 64;
  o.device_clusters = 2;
  o.device_stages = 4;
  o.training.average_every = 10;
  std::ostringstream report;
  auto summary = compile_model(o, report);
  ASSERT_TRUE(summary.ok()) << summary.status().to_string();
  auto devices = part::load_devices(devices_path);
  ASSERT_TRUE(devices.ok());
  ASSERT_EQ(summary->report.clusters.size(), 2u);
  for (int c = 0; c < 2; ++c) {
    const auto& stages = summary->report.clusters[static_cast<size_t>(c)].stages;
    ASSERT_EQ(stages.size(), 4u);
    for (const StageReport& s : stages)
      EXPECT_EQ(s.machine.rfind(c == 0 ? "desk-" : "laptop-", 0), 0u) << "cluster " << c << " holds " << s.machine;
  }
  ASSERT_EQ(summary->node_dirs.size(), 8u);
  std::vector<std::string> seen;
  for (int c = 0; c < 2; ++c)
    for (const StageReport& s : summary->report.clusters[static_cast<size_t>(c)].stages) {
      auto manifest = read_json_file(dir + "/" + s.node_id + "/manifest.json");
      ASSERT_TRUE(manifest.ok()) << manifest.status().to_string();
      const int d = devices->find(s.machine);
      ASSERT_GE(d, 0) << s.machine;
      const std::string address = devices->devices[static_cast<size_t>(d)].address;
      EXPECT_EQ(manifest->get_string("node.host").value() + ":" + std::to_string(manifest->get_int("node.port").value()),
                address);
      EXPECT_EQ(manifest->get_int("cluster").value(), c);
      EXPECT_EQ(manifest->get_int("stage").value(), s.stage);
      // The flexible update rule from the predicted speeds: the desktops (cluster 0)
      // do the full --average-every local steps per round, the laptops fewer.
      const int64_t local = manifest->get_int("training.average_every").value();
      EXPECT_EQ(manifest->get_int("training.local_steps_max").value(), o.training.average_every);
      if (c == 0) {
        EXPECT_EQ(local, o.training.average_every);
      } else {
        EXPECT_LT(local, o.training.average_every);
      }
      const auto& stages = summary->report.clusters[static_cast<size_t>(c)].stages;
      if (s.stage + 1 < 4) {
        const std::string next = stages[static_cast<size_t>(s.stage + 1)].address;
        EXPECT_EQ(manifest->get_string("next.host").value() + ":" + std::to_string(manifest->get_int("next.port").value()),
                  next);
      }
      seen.push_back(s.machine);
    }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::unique(seen.begin(), seen.end()), seen.end()) << "a machine runs two stages";
}

TEST(DevicesCompile, ReportHtmlIsSelfContainedAndNamesEveryMachine) {
  const std::string dir = fresh_dir("html");
  const std::string devices_path = source("models/devices/three_laptops.json");
  CompileOptions o = options_for("models/cnn/cnn.onnx", devices_path, dir);
  o.batch = 64;
  o.device_stages = 3;
  std::ostringstream report;
  auto summary = compile_model(o, report);
  ASSERT_TRUE(summary.ok()) << summary.status().to_string();
  const std::string html = read_text(dir + "/report.html");
  const std::string text = read_text(dir + "/report.txt");
  ASSERT_FALSE(html.empty());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos) << "no external assets";
  EXPECT_EQ(html.find("href="), std::string::npos) << "no external assets";
  EXPECT_NE(html.find("</html>"), std::string::npos);
  for (const char* machine : {"laptop-old", "laptop-mid", "laptop-new"}) {
    EXPECT_NE(html.find(machine), std::string::npos) << machine;
    EXPECT_NE(text.find(machine), std::string::npos) << machine;
  }
  // Per stage: memory against capacity, predicted times and what crosses.
  for (const char* needle : {"memory:", "of 4.29 GB", "predicted per micro-batch: F", "sends "})
    EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;
  EXPECT_NE(text.find("cluster formation"), std::string::npos) << "the cluster plan's explanation";
}

// Without a devices file the --stages path is unchanged and writes report.html too.
TEST(DevicesCompile, StagesPathStillWorksAndWritesHtml) {
  const std::string dir = fresh_dir("stages");
  CompileOptions o;
  o.model_path = source("models/cnn/cnn.onnx");
  o.out_dir = dir;
  o.stages = 2;
  o.batch = 16;
  o.microbatches = 2;
  std::ostringstream report;
  auto summary = compile_model(o, report);
  ASSERT_TRUE(summary.ok()) << summary.status().to_string();
  EXPECT_EQ(summary->stages, 2);
  ASSERT_EQ(summary->report.clusters.at(0).stages.size(), 2u);
  EXPECT_EQ(summary->report.clusters[0].stages[1].address, "127.0.0.1:29501");
  EXPECT_TRUE(fs::exists(dir + "/report.html"));
  EXPECT_TRUE(fs::exists(dir + "/node1/manifest.json"));
}


// A model carrying its own loss reads its labels input in a node (a Reshape) that
// the split alone may put on any stage; only the last stage is fed the labels, so
// every node reading them lands there. Eight stages on mixed_8 used to put it
// earlier and fail; the 8 machines of 2 kinds also take 70 machine orders to try,
// not 8! = 40320.
TEST(DevicesCompile, LabelReadersGoToTheLastStageOnEightMachines) {
  const std::string dir = fresh_dir("labels8");
  CompileOptions o = options_for("models/llama_block/llama_block_small.onnx", source("models/devices/mixed_8.json"), dir);
  o.batch = 8;
  o.microbatches = 4;
  o.device_clusters = 1;
  o.device_stages = 8;
  std::ostringstream report;
  auto summary = compile_model(o, report);
  ASSERT_TRUE(summary.ok()) << summary.status().to_string();
  EXPECT_EQ(summary->node_dirs.size(), 8u);
}


// A device of role "backup" shadows the least reliable stage machine: three
// laptops of speeds 1:2:4 (laptop-mid at reliability 0.5) and a spare backup.
TEST(DevicesCompile, BackupDeviceShadowsTheLeastReliableStage) {
  const std::string dir = fresh_dir("backup-device");
  const std::string text = R"({"devices": [
    {"id": "laptop-old", "address": "10.0.0.11:29500", "kind": "cpu", "cores": 2, "gemm_gflops": 25.0,
     "conv_gflops": 18.0, "memory_bandwidth_gbps": 6.0, "memory_bytes": 4294967296},
    {"id": "laptop-mid", "address": "10.0.0.12:29500", "kind": "cpu", "cores": 4, "gemm_gflops": 50.0,
     "conv_gflops": 36.0, "memory_bandwidth_gbps": 12.0, "memory_bytes": 8589934592, "reliability": 0.5},
    {"id": "laptop-new", "address": "10.0.0.13:29500", "kind": "cpu", "cores": 8, "gemm_gflops": 100.0,
     "conv_gflops": 72.0, "memory_bandwidth_gbps": 24.0, "memory_bytes": 17179869184},
    {"id": "spare", "address": "10.0.0.20:29500", "kind": "cpu", "cores": 4, "gemm_gflops": 50.0,
     "conv_gflops": 36.0, "memory_bandwidth_gbps": 12.0, "memory_bytes": 8589934592, "role": "backup"}]})";
  fs::create_directories(dir);
  std::ofstream(dir + "/devices.json") << text;
  CompileOptions o = options_for("models/cnn/cnn.onnx", dir + "/devices.json", dir + "/out");
  o.device_clusters = 1;
  o.device_stages = 3;
  std::ostringstream report;
  auto summary = compile_model(o, report);
  ASSERT_TRUE(summary.ok()) << summary.status().to_string();
  const auto& stages = summary->report.clusters.at(0).stages;
  int mid_stage = -1;
  for (const StageReport& s : stages)
    if (s.machine == "laptop-mid") mid_stage = s.stage;
  ASSERT_GE(mid_stage, 0);
  auto backup = read_json_file(dir + "/out/node3/manifest.json");
  ASSERT_TRUE(backup.ok()) << backup.status().to_string();
  EXPECT_EQ(backup->get_int("stage").value(), mid_stage);
  EXPECT_EQ(backup->get_string("node.host").value(), "10.0.0.20");
  EXPECT_EQ(backup->get_string("backup_of.id").value(), stages[static_cast<size_t>(mid_stage)].node_id);
  auto worker = read_json_file(dir + "/out/" + stages[static_cast<size_t>(mid_stage)].node_id + "/manifest.json");
  ASSERT_TRUE(worker.ok());
  EXPECT_EQ(worker->get_string("backups[0].id").value(), "node3");
}

}  // namespace
}  // namespace ravnest::cg
