// Roofline-style cost model over device profiles (see cost_model.h).
#include "partitioner/cost_model.h"

#include <algorithm>
#include <cmath>

#include "frontend/rule_util.h"

namespace ravnest::part {
namespace {

using fe::rules::value_bytes;

double throughput_flops(OpClass c, const DeviceProfile& d, const CostModelOptions& o) {
  switch (c) {
    case OpClass::kConv: return d.conv_gflops * 1e9;
    case OpClass::kGemm: return d.gemm_gflops * 1e9;
    case OpClass::kOther: break;
  }
  return d.gemm_gflops * 1e9 * o.other_efficiency;
}

fe::OpCost node_cost(const Node& node, const Graph& graph) {
  const fe::OpDef* def = fe::find_op(node.domain, node.op, static_cast<int>(graph.opset));
  return def && def->cost ? def->cost(node, graph) : fe::OpCost{};
}

// Bytes the runtime moves after a node's W kernel: it adds each micro-batch's weight
// gradient into the step's sum (reads both, writes the sum), 3x the parameters read.
double gradient_accumulation_bytes(const Node& node, const Graph& graph) {
  double bytes = 0;
  for (const std::string& in : node.inputs)
    if (!in.empty() && std::find(graph.parameters.begin(), graph.parameters.end(), in) != graph.parameters.end())
      bytes += 3 * value_bytes(graph, in);
  return bytes;
}

}  // namespace

const char* op_class_name(OpClass c) {
  switch (c) {
    case OpClass::kConv: return "conv";
    case OpClass::kGemm: return "gemm";
    case OpClass::kOther: break;
  }
  return "other";
}

OpClass op_class(const std::string& domain, const std::string& op) {
  if (op == "Conv" || op == "ConvGradInput" || op == "ConvGradWeight") return OpClass::kConv;
  if (op == "Gemm" || op == "MatMul") return OpClass::kGemm;
  (void)domain;
  return OpClass::kOther;
}

double kernel_overhead(const DeviceProfile& device, const CostModelOptions& options) {
  return device.kernel_overhead_s > 0 ? device.kernel_overhead_s : options.kernel_overhead_s;
}

double program_overhead(const DeviceProfile& device, const CostModelOptions& options) {
  return device.program_overhead_s > 0 ? device.program_overhead_s : options.program_overhead_s;
}

double pass_overhead(const DeviceProfile& device, const CostModelOptions& options) {
  return device.pass_overhead_s > 0 ? device.pass_overhead_s : options.pass_overhead_s;
}

double stage_pass_overhead(const DeviceProfile& device, const CostModelOptions& options) {
  return program_overhead(device, options) + pass_overhead(device, options);
}

double kernel_seconds(double flops, double bytes, OpClass c, const DeviceProfile& device,
                      const CostModelOptions& options) {
  if (flops <= 0 && bytes <= 0) return 0;
  return kernel_overhead(device, options) + flops / throughput_flops(c, device, options) +
         bytes / (device.memory_bandwidth_gbps * 1e9);
}

PassTimes op_times(const fe::OpCost& cost, OpClass c, const DeviceProfile& device, const CostModelOptions& options) {
  PassTimes t;
  t.f = kernel_seconds(cost.flops, cost.bytes, c, device, options);
  if (cost.backward_input_flops > 0) t.b = kernel_seconds(cost.backward_input_flops, cost.bytes, c, device, options);
  if (cost.backward_weight_flops > 0) t.w = kernel_seconds(cost.backward_weight_flops, cost.bytes, c, device, options);
  return t;
}

namespace {

// `narrow` GFLOP/s at a reduction of 9 (one input channel, 3x3), conv_gflops at 576 (64 channels) and above,
// geometric interpolation between; conv_gflops where `narrow` was not measured (0).
double interpolated_conv_gflops(const DeviceProfile& device, double narrow, double reduction) {
  constexpr double kNarrow = 9, kWide = 64 * 9;  // the reductions of the profiled convolutions
  if (narrow <= 0 || reduction >= kWide) return device.conv_gflops;
  if (reduction <= kNarrow) return narrow;
  const double x = std::log(reduction / kNarrow) / std::log(kWide / kNarrow);
  return std::exp(std::log(narrow) + x * (std::log(device.conv_gflops) - std::log(narrow)));
}

}  // namespace

double conv_forward_gflops(const DeviceProfile& device, double reduction) {
  return interpolated_conv_gflops(device, device.conv_narrow_gflops, reduction);
}

double conv_grad_weight_gflops(const DeviceProfile& device, double reduction) {
  return interpolated_conv_gflops(device, device.conv_narrow_grad_weight_gflops, reduction);
}

namespace {

// Cin / group * kh * kw of a convolution from its weight's static shape [M, C/group, kh, kw]: the input 1 of a
// forward Conv, the output 0 (the weight gradient) of a ConvGradWeight; 0 for other nodes or unknown shapes.
double conv_reduction(const Node& n, const Graph& graph) {
  const std::string* weight = nullptr;
  if (n.domain.empty() && n.op == "Conv" && n.inputs.size() >= 2) weight = &n.inputs[1];
  if (n.domain == kRavnestDomain && n.op == "ConvGradWeight" && !n.outputs.empty()) weight = &n.outputs[0];
  const ValueInfo* w = weight && !weight->empty() ? graph.find_value(*weight) : nullptr;
  if (!w || !w->is_static() || w->static_shape().size() != 4) return 0;
  const Shape s = w->static_shape();
  return static_cast<double>(s[1] * s[2] * s[3]);
}

}  // namespace

std::vector<PassTimes> graph_times(const Graph& graph, const DeviceProfile& device, const CostModelOptions& options) {
  std::vector<PassTimes> out;
  out.reserve(graph.nodes.size());
  for (const Node& n : graph.nodes) {
    const fe::OpCost cost = node_cost(n, graph);
    PassTimes t = op_times(cost, op_class(n.domain, n.op), device, options);
    // A convolution or its weight gradient with a short reduction (few input channels) runs below conv_gflops:
    // a ConvGradWeight node (a W program) and the W of a forward Conv (the whole model, as the partitioner
    // sees it) at conv_grad_weight_gflops, a forward Conv at conv_forward_gflops.
    if (const double k = conv_reduction(n, graph); k > 0) {
      auto at = [&](double flops, double gflops) {
        return kernel_overhead(device, options) + flops / (gflops * 1e9) +
               cost.bytes / (device.memory_bandwidth_gbps * 1e9);
      };
      const bool forward = n.op == "Conv";
      if (cost.flops > 0)
        t.f = at(cost.flops, forward ? conv_forward_gflops(device, k) : conv_grad_weight_gflops(device, k));
      if (forward && cost.backward_weight_flops > 0)
        t.w = at(cost.backward_weight_flops, conv_grad_weight_gflops(device, k));
    }
    if (t.w > 0) t.w += gradient_accumulation_bytes(n, graph) / (device.memory_bandwidth_gbps * 1e9);
    out.push_back(t);
  }
  return out;
}

double gradient_accumulation_seconds(const Graph& weight_program, const DeviceProfile& device) {
  double bytes = 0;
  for (const std::string& out : weight_program.outputs) bytes += 3 * value_bytes(weight_program, out);
  return bytes / (device.memory_bandwidth_gbps * 1e9);
}

double transfer_seconds(double bytes, const LinkEstimate& link) { return link.transfer_seconds(bytes); }

ModelTotals model_totals(const Graph& graph) {
  ModelTotals t;
  for (const Node& n : graph.nodes) {
    fe::OpCost c = node_cost(n, graph);
    int k = static_cast<int>(op_class(n.domain, n.op));
    if (const double r = conv_reduction(n, graph); r > 0 && n.op == "Conv") {
      t.convs.push_back({r, c.flops, c.backward_weight_flops});  // as graph_times prices them
      t.flops[k] += c.backward_input_flops;
    } else {
      t.flops[k] += c.flops + c.backward_input_flops + c.backward_weight_flops;
    }
    double passes = (c.flops > 0 || c.bytes > 0 ? 1 : 0) + (c.backward_input_flops > 0 ? 1 : 0) +
                    (c.backward_weight_flops > 0 ? 1 : 0);
    t.bytes += passes * c.bytes + (c.backward_weight_flops > 0 ? gradient_accumulation_bytes(n, graph) : 0);
    t.kernels += passes;
    for (const std::string& out : n.outputs) {
      if (out.empty()) continue;
      double b = value_bytes(graph, out);
      t.activation_bytes += b;
      t.boundary_bytes = std::max(t.boundary_bytes, b);
    }
  }
  for (const std::string& p : graph.parameters) t.param_bytes += value_bytes(graph, p);
  return t;
}

double model_seconds(const ModelTotals& totals, const DeviceProfile& device, const CostModelOptions& options) {
  double s = totals.kernels * kernel_overhead(device, options) + totals.bytes / (device.memory_bandwidth_gbps * 1e9);
  for (int k = 0; k < 3; ++k) s += totals.flops[k] / throughput_flops(static_cast<OpClass>(k), device, options);
  for (const ModelTotals::Conv& c : totals.convs) {
    s += c.forward_flops / (conv_forward_gflops(device, c.reduction) * 1e9) +
         c.weight_flops / (conv_grad_weight_gflops(device, c.reduction) * 1e9);
  }
  return s;
}

}  // namespace ravnest::part
