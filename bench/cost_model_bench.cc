// Cost-model calibration: measures this machine the way `ravnest-rt profile`
// does, then times every kernel of the CNN's training step (forward, B and W
// nodes of the autodiff graph) through the runtime's KernelRegistry and prints
// the cost model's prediction beside each measurement, and the error per op
// class (conv, gemm, other): sum(predicted) / sum(measured) - 1, and the mean
// absolute per-op error.
//
//   ravnest-cost-model-bench [--model models/cnn/cnn.onnx] [--batch 64] [--ms 150]
//
// Nodes that read integer or constant inputs (shapes, MaxPool indices) are not
// timed: filling those with test values would not be the real kernel's work.
// Not a test: nothing is asserted.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>

#include "frontend/autodiff.h"
#include "frontend/import.h"
#include "frontend/op_table.h"
#include "partitioner/cost_model.h"
#include "runtime/profile/profile.h"

namespace {

using namespace ravnest;

struct ClassSums {
  double predicted = 0, measured = 0, abs_error = 0;
  int ops = 0;
};

int run(const std::string& model_path, int64_t batch, int ms) {
  fe::ImportOptions io;
  io.batch = batch;
  auto imported = fe::import_model(model_path, io);
  if (!imported.ok()) {
    std::fprintf(stderr, "error: %s\n", imported.status().message().c_str());
    return 1;
  }
  Graph g = std::move(imported).value();
  fe::BackwardRequest request;
  request.seeds = g.outputs;
  request.params = g.parameters;
  auto bw = fe::build_backward(g, request);
  if (!bw.ok()) {
    std::fprintf(stderr, "error: %s\n", bw.status().message().c_str());
    return 1;
  }
  // One graph with the backward's values, so that cost rules see every shape.
  Graph train = g;
  for (const auto& [name, info] : bw->values) train.values[name] = info;
  for (const auto& [name, data] : bw->constants) train.initializers[name] = data;
  std::vector<std::pair<Node, std::string>> nodes;  // node, pass
  for (const Node& n : g.nodes) nodes.push_back({n, "F"});
  for (size_t i = 0; i < bw->nodes.size(); ++i) nodes.push_back({bw->nodes[i], bw->work[i] == fe::Work::kB ? "B" : "W"});
  for (const auto& [n, pass] : nodes) train.nodes.push_back(n);

  // This machine, measured as `ravnest-rt profile` does.
  Status st;
  part::DeviceProfile device;
  device.id = "this-machine";
  device.address = "localhost:0";
  device.cores = std::max(1u, std::thread::hardware_concurrency());
  device.gemm_gflops = rt::measure_gemm_gflops(std::chrono::milliseconds(1500), &st);
  if (st.ok()) device.conv_gflops = rt::measure_conv_gflops(std::chrono::milliseconds(1500), &st);
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.message().c_str());
    return 1;
  }
  device.memory_bandwidth_gbps = rt::measure_memory_bandwidth_gbps(static_cast<int>(device.cores), std::chrono::milliseconds(1000));
  device.memory_bytes = 1;
  std::printf("machine: %lld cores, gemm %.1f GFLOP/s, conv %.1f GFLOP/s, memory %.2f GB/s; model %s, batch %lld\n\n",
              static_cast<long long>(device.cores), device.gemm_gflops, device.conv_gflops,
              device.memory_bandwidth_gbps, model_path.c_str(), static_cast<long long>(batch));
  std::printf("%-4s %-28s %-16s %-6s %12s %12s %8s\n", "pass", "node", "op", "class", "predicted_us", "measured_us",
              "error");
  std::map<part::OpClass, ClassSums> sums;
  int skipped = 0;
  for (const auto& [n, pass] : nodes) {
    std::vector<ValueInfo> ins, outs;
    bool timeable = true;
    for (const std::string& in : n.inputs) {
      if (in.empty()) {
        ins.push_back(ValueInfo{});
        continue;
      }
      const ValueInfo* v = train.find_value(in);
      bool constant = train.is_initializer(in) && !train.parameters.count(in);
      if (!v || !v->is_static() || v->dtype != DType::kF32 || constant) timeable = false;
      if (v) ins.push_back(*v);
    }
    for (const std::string& out : n.outputs) {
      const ValueInfo* v = out.empty() ? nullptr : train.find_value(out);
      if (!out.empty() && (!v || !v->is_static())) timeable = false;
      outs.push_back(v ? *v : ValueInfo{});
    }
    const fe::OpDef* def = fe::find_op(n.domain, n.op, static_cast<int>(train.opset));
    if (!timeable || !def || !def->cost) {
      ++skipped;
      continue;
    }
    fe::OpCost cost = def->cost(n, train);
    part::OpClass cls = part::op_class(n.domain, n.op);
    double predicted = part::kernel_seconds(cost.flops, cost.bytes, cls, device);
    auto timing = rt::time_kernel(n, ins, outs, std::chrono::milliseconds(ms));
    if (!timing.ok()) {
      std::printf("%-4s %-28s %-16s skipped: %s\n", pass.c_str(), n.name.c_str(), n.op.c_str(),
                  timing.status().message().substr(0, 80).c_str());
      ++skipped;
      continue;
    }
    double err = predicted / timing->seconds - 1;
    std::printf("%-4s %-28s %-16s %-6s %12.1f %12.1f %+7.0f%%\n", pass.c_str(), n.name.substr(0, 28).c_str(),
                n.op.c_str(), part::op_class_name(cls), predicted * 1e6, timing->seconds * 1e6, err * 100);
    ClassSums& s = sums[cls];
    s.predicted += predicted;
    s.measured += timing->seconds;
    s.abs_error += std::fabs(err);
    ++s.ops;
  }
  std::printf("\n%-6s %4s %14s %14s %12s %16s\n", "class", "ops", "predicted_ms", "measured_ms", "sum_error",
              "mean_|op_error|");
  ClassSums all;
  for (const auto& [cls, s] : sums) {
    std::printf("%-6s %4d %14.3f %14.3f %+11.0f%% %15.0f%%\n", part::op_class_name(cls), s.ops, s.predicted * 1e3,
                s.measured * 1e3, (s.predicted / s.measured - 1) * 100, s.abs_error / s.ops * 100);
    all.predicted += s.predicted;
    all.measured += s.measured;
    all.abs_error += s.abs_error;
    all.ops += s.ops;
  }
  std::printf("%-6s %4d %14.3f %14.3f %+11.0f%% %15.0f%%\n", "all", all.ops, all.predicted * 1e3, all.measured * 1e3,
              (all.predicted / all.measured - 1) * 100, all.abs_error / std::max(1, all.ops) * 100);
  std::printf("(%d node(s) not timed: integer or constant inputs)\n", skipped);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = std::string(RAVNEST_SOURCE_DIR_BENCH) + "/models/cnn/cnn.onnx";
  int64_t batch = 64;
  int ms = 150;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string arg = argv[i];
    if (arg == "--model") {
      model = argv[i + 1];
    } else if (arg == "--batch") {
      batch = std::atoll(argv[i + 1]);
    } else if (arg == "--ms") {
      ms = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: ravnest-cost-model-bench [--model FILE] [--batch N] [--ms N]\n");
      return 2;
    }
  }
  if (batch < 1 || ms < 1) {
    std::fprintf(stderr, "--batch and --ms must be positive\n");
    return 2;
  }
  return run(model, batch, ms);
}
