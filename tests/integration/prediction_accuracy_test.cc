// Against reality: the compiler's predicted per-stage compute (cost model over
// a measured profile of this machine) beside what a real 3-stage run measures.
//
// This machine is profiled with `ravnest-rt profile` (one thread, as each of
// the three local nodes gets), three copies of the profile at 127.0.0.1 form
// the devices file, the CNN is compiled for them in 3 stages and trained by
// ravnest-launch with a trace. Measured compute per stage = median F + B + W
// CPU seconds per micro-batch from the trace's spans (args.cpu_us, F less
// its DATA and TALLY spans), the first step (warm-up) left out. Every number
// goes into the test's properties (the XML report);
// timing on a shared machine is noisy, so the test asserts only what is
// robust: each stage's measured compute is within 3x of its prediction, and
// stages predicted clearly (2x) apart are measured in the same order. The
// precise comparison (the 25%) is run by hand on a quiet machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "codegen/compile.h"
#include "common/json.h"
#include "common/ports.h"
#include "partitioner/cost_model.h"
#include "partitioner/devices.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;

constexpr int kStages = 3;
constexpr int kSteps = 8;
// Measured within this factor of predicted: loose, as the profile and the run share a loaded machine
// (2.6x was seen at a load average of 8 on 2 cores, in wall time, before CPU time was used).
constexpr double kBound = 3;
// Stages whose kernels are predicted under this many seconds (the prediction less the fixed cost of its three
// passes) are only recorded: their time is mostly that fixed cost (the trainer's pass with cold caches), which
// the load on the machine moves most (the profile measured it at 21-97 us per pass at load averages 4-9).
constexpr double kSmallStage = 1e-4;
// Stages predicted this many times apart must be measured in the same order. Not 1.5x: the stage of the fc
// layers (memory-bound, its prediction following the profile's memory bandwidth, 23-38 GB/s between profiles
// minutes apart) was measured 47% above its prediction while the first convolution's was 7% below, so two
// stages predicted 1.53x apart were measured 0.96x apart (BENCHMARKS.md 6d, run 12 of the later runs).
constexpr double kOrderFactor = 2;

// Median F, B and W seconds per micro-batch of each stage, from a merged trace, steps >= 1: the CPU
// time of the compute thread (args.cpu_us; the run uses one thread per node, and 3 nodes on 2 cores
// are preempted, which wall time would count), F without its DATA and TALLY spans (building the
// batch, counting correct predictions). The median, as a few spans take several times the others (seen: 3 of 28 W spans at 5 ms
// beside 0.3 ms, in CPU time) and a mean would follow them.
Result<std::vector<std::array<double, 3>>> measured_compute(const Json& trace) {
  RN_ASSIGN_OR_RETURN(const Json::Array* events, trace.get_array("traceEvents"));
  std::map<int64_t, int> stage_of_pid;
  for (const Json& e : *events)
    if (e.get_string_or("ph", "").value() == "M" && e.get_string_or("name", "").value() == "process_name") {
      const std::string name = e.get_string_or("args.name", "").value();
      for (int s = 0; s < kStages; ++s)
        if (name == "node" + std::to_string(s) + " (stage " + std::to_string(s) + ")")
          stage_of_pid[e.get_int("pid").value()] = s;
    }
  if (stage_of_pid.size() != static_cast<size_t>(kStages))
    return error(Code::kInvalidArgument, "the trace names ", stage_of_pid.size(), " of ", kStages, " stages");
  // CPU seconds per (stage, F/B/W, step, micro-batch); DATA and TALLY spans count negative in F.
  std::map<std::array<int64_t, 4>, double> spans;
  for (const Json& e : *events) {
    if (e.get_string_or("ph", "").value() != "X") continue;
    auto it = stage_of_pid.find(e.get_int("pid").value());
    const int64_t step = e.get_int_or("args.step", -1).value();
    if (it == stage_of_pid.end() || step < 1) continue;
    const std::string name = e.get_string_or("name", "").value();
    const std::string kind = name.substr(0, name.find(' '));
    const bool data = kind == "DATA" || kind == "TALLY";
    const int k = kind == "F" || data ? 0 : kind == "B" ? 1 : kind == "W" ? 2 : -1;
    if (k < 0) continue;
    const int64_t cpu_us = e.get_int_or("args.cpu_us", -1).value();
    if (cpu_us < 0) return error(Code::kInvalidArgument, "compute span '", name, "' has no args.cpu_us");
    const double s = static_cast<double>(cpu_us) * 1e-6;
    spans[{it->second, k, step, e.get_int_or("args.microbatch", -1).value()}] += data ? -s : s;
  }
  std::vector<std::array<std::vector<double>, 3>> samples(kStages);
  for (const auto& [key, s] : spans) samples[static_cast<size_t>(key[0])][static_cast<size_t>(key[1])].push_back(s);
  std::vector<std::array<double, 3>> out(kStages, {0, 0, 0});
  for (size_t s = 0; s < kStages; ++s)
    for (size_t k = 0; k < 3; ++k) {
      std::vector<double>& v = samples[s][k];
      if (v.empty()) continue;
      std::sort(v.begin(), v.end());
      out[s][k] = v[v.size() / 2];
    }
  return out;
}

TEST(PredictionAccuracy, ThreeStageCnnOnThisMachine) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::string dir = testing::temp_dir("prediction-accuracy");

  // This machine, measured with one thread (what each of the three local nodes gets).
  auto profiled = run_process({binary("ravnest-rt"), "profile", "--seconds", "4", "--id", "here", "--address",
                               "127.0.0.1:29500", "-o", dir + "/here.json"},
                              90, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(profiled.exit_code, 0) << profiled.err;
  auto here = part::load_device_profile(dir + "/here.json");
  ASSERT_TRUE(here.ok()) << here.status().to_string();
  // The profile measures both narrow-convolution figures (forward and weight gradient) and the loader reads them.
  EXPECT_GT(here->conv_narrow_gflops, 0);
  EXPECT_GT(here->conv_narrow_grad_weight_gflops, 0);

  // Three copies at 127.0.0.1 with distinct ports, joined by loopback links.
  part::DeviceSet set;
  for (int i = 0; i < kStages; ++i) {
    part::DeviceProfile d = *here;
    d.id = "here-" + std::to_string(i);
    d.address = "127.0.0.1:" + std::to_string(free_loopback_port());
    d.links.clear();
    set.devices.push_back(d);
  }
  for (int a = 0; a < kStages; ++a)
    for (int b = a + 1; b < kStages; ++b)
      set.links.push_back({set.devices[static_cast<size_t>(a)].id, set.devices[static_cast<size_t>(b)].id, 1e10, 5e-5});
  {
    std::ofstream out(dir + "/devices.json");
    out << devices_to_json(set).dump(2);
  }

  cg::CompileOptions options;
  options.model_path = source_path("models/cnn/cnn.onnx");
  options.out_dir = dir + "/bundles";
  options.devices_path = dir + "/devices.json";
  options.device_clusters = 1;
  options.device_stages = kStages;
  options.batch = 64;
  options.microbatches = 4;
  options.training.max_steps = kSteps;
  options.training.evaluate = false;
  std::ostringstream report;
  auto summary = cg::compile_model(options, report);
  ASSERT_TRUE(summary.ok()) << summary.status().to_string();
  const auto& stages = summary->report.clusters.at(0).stages;
  ASSERT_EQ(stages.size(), static_cast<size_t>(kStages));

  const std::string trace_path = dir + "/trace.json";
  auto run = run_process({binary("ravnest-launch"), options.out_dir, "--trace", trace_path, "--quiet", "--timeout",
                          "240"},
                         300, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(run.exit_code, 0) << run.err << run.out;
  auto trace = read_json_file(trace_path);
  ASSERT_TRUE(trace.ok()) << trace.status().to_string();
  auto fbw = measured_compute(*trace);
  ASSERT_TRUE(fbw.ok()) << fbw.status().to_string();
  std::vector<double> measured;
  for (const auto& m : *fbw) measured.push_back(m[0] + m[1] + m[2]);

  RecordProperty("gemm_gflops", std::to_string(here->gemm_gflops));
  RecordProperty("conv_gflops", std::to_string(here->conv_gflops));
  RecordProperty("conv_narrow_gflops", std::to_string(here->conv_narrow_gflops));
  RecordProperty("conv_narrow_grad_weight_gflops", std::to_string(here->conv_narrow_grad_weight_gflops));
  RecordProperty("memory_bandwidth_gbps", std::to_string(here->memory_bandwidth_gbps));
  RecordProperty("kernel_overhead_s", std::to_string(here->kernel_overhead_s));
  RecordProperty("program_overhead_s", std::to_string(here->program_overhead_s));
  RecordProperty("pass_overhead_s", std::to_string(here->pass_overhead_s));
  // The prediction without the trainer's pass overhead (what the cost model gave before it had one), for
  // comparison: every stage of the CNN runs all three of F, B and W.
  const double pass_overheads = 3 * part::pass_overhead(*here);
  std::printf("profile: gemm %.1f, conv %.1f, narrow conv %.1f, its weight gradient %.1f GFLOP/s; memory %.1f GB/s; "
              "pass overhead %.1f us\n",
              here->gemm_gflops, here->conv_gflops, here->conv_narrow_gflops, here->conv_narrow_grad_weight_gflops,
              here->memory_bandwidth_gbps, part::pass_overhead(*here) * 1e6);
  std::vector<double> predicted;
  for (int s = 0; s < kStages; ++s) {
    const cg::StageReport& r = stages[static_cast<size_t>(s)];
    predicted.push_back(r.compute_s());
    const double m = measured[static_cast<size_t>(s)];
    const auto& parts = (*fbw)[static_cast<size_t>(s)];
    const std::string key = "stage" + std::to_string(s);
    RecordProperty(key + "_ops", r.nodes);
    RecordProperty(key + "_predicted_s", std::to_string(r.compute_s()));
    RecordProperty(key + "_measured_s", std::to_string(m));
    RecordProperty(key + "_error_pct", std::to_string(100.0 * (m - r.compute_s()) / r.compute_s()));
    const double without = r.compute_s() - pass_overheads;
    RecordProperty(key + "_predicted_without_pass_overhead_s", std::to_string(without));
    RecordProperty(key + "_error_without_pass_overhead_pct", std::to_string(100.0 * (m - without) / without));
    std::printf("stage %d (%s): predicted %.6f s (F %.6f B %.6f W %.6f), measured %.6f s (F %.6f B %.6f W %.6f), "
                "error %+.1f%% (%+.1f%% without the pass overhead of %.1f us)\n",
                s, r.nodes.c_str(), r.compute_s(), r.f_s, r.b_s, r.w_s, m, parts[0], parts[1], parts[2],
                100.0 * (m - r.compute_s()) / r.compute_s(), 100.0 * (m - without) / without,
                part::pass_overhead(*here) * 1e6);
  }
  for (int s = 0; s < kStages; ++s) {
    // Each pass's prediction holds the pass's fixed cost of this profile (executor + trainer) beside its kernels.
    const cg::StageReport& r = stages[static_cast<size_t>(s)];
    for (double pass : {r.f_s, r.b_s, r.w_s}) EXPECT_GT(pass, part::stage_pass_overhead(*here)) << "stage " << s;
    const double p = predicted[static_cast<size_t>(s)], m = measured[static_cast<size_t>(s)];
    ASSERT_GT(m, 0) << "stage " << s << " measured no F/B/W";
    if (p - 3 * part::stage_pass_overhead(*here) < kSmallStage) continue;
    EXPECT_LE(m, kBound * p) << "stage " << s << ": measured " << m << " s, predicted " << p << " s";
    EXPECT_GE(m, p / kBound) << "stage " << s << ": measured " << m << " s, predicted " << p << " s";
    for (int t = 0; t < kStages; ++t) {
      if (predicted[static_cast<size_t>(t)] > kOrderFactor * p) {
        EXPECT_GT(measured[static_cast<size_t>(t)], m)
            << "stage " << t << " is predicted " << kOrderFactor << "x slower than stage " << s
            << " but measured faster";
      }
    }
  }
}

}  // namespace
}  // namespace ravnest
