// Cost rules of every op in the table (see rules.h), evaluated at static shapes
// after the shape rules ran.
//
// Conventions (the cost model's contract):
//  * a multiply-add counts 2 FLOPs; a bias add, comparison or elementwise op 1 per element;
//  * Conv/Gemm/MatMul: B (input gradient) = 2*MACs, W (weight gradient) = 2*MACs plus
//    one add per output element for the bias gradient when there is a bias;
//  * elementwise ops: B = forward, W = 0; ops that only move data: 0 FLOPs;
//  * bytes = every input read once + every output written once.
#include "frontend/rule_util.h"
#include "frontend/rules.h"

namespace ravnest::fe::rules {
namespace {

double io_bytes(const Node& node, const Graph& graph) {
  double bytes = 0;
  for (const std::string& in : node.inputs)
    if (!in.empty()) bytes += value_bytes(graph, in);
  for (const std::string& out : node.outputs)
    if (!out.empty()) bytes += value_bytes(graph, out);
  return bytes;
}

double out_numel(const Node& node, const Graph& graph) {
  return has_output(node, 0) ? value_numel(graph, node.outputs[0]) : 0;
}

double in_numel(const Node& node, const Graph& graph, size_t i) {
  return has_input(node, i) ? value_numel(graph, node.inputs[i]) : 0;
}

// Conv geometry of a node whose shapes were already checked by its shape rule.
ConvGeometry checked_geometry(const Node& node, const Shape& x, const Shape& w) {
  auto g = conv_geometry(node, x, w);
  return g.ok() ? g.value() : ConvGeometry{};
}

Shape static_in(const Node& node, const Graph& graph, size_t i) {
  auto s = in_shape(node, graph, i);
  return s.ok() ? s.value() : Shape{};
}

}  // namespace

CostFn cost_eltwise(double per_element, bool differentiable) {
  return [per_element, differentiable](const Node& node, const Graph& graph) {
    OpCost c;
    c.flops = per_element * out_numel(node, graph);
    c.backward_input_flops = differentiable ? c.flops : 0;
    c.bytes = io_bytes(node, graph);
    return c;
  };
}

OpCost cost_data_movement(const Node& node, const Graph& graph) {
  OpCost c;
  c.bytes = io_bytes(node, graph);
  return c;
}

OpCost cost_conv(const Node& node, const Graph& graph) {
  ConvGeometry g = checked_geometry(node, static_in(node, graph, 0), static_in(node, graph, 1));
  double outputs = static_cast<double>(numel(g.out_shape()));
  double bias = has_input(node, 2) ? outputs : 0;
  OpCost c;
  c.flops = 2 * g.macs() + bias;
  c.backward_input_flops = 2 * g.macs();
  c.backward_weight_flops = 2 * g.macs() + bias;
  c.bytes = io_bytes(node, graph);
  return c;
}

OpCost cost_maxpool(const Node& node, const Graph& graph) {
  std::vector<int64_t> k = node.attr_ints("kernel_shape", {1, 1});
  double window = 1;
  for (int64_t d : k) window *= static_cast<double>(d);
  OpCost c;
  c.flops = out_numel(node, graph) * window;       // one comparison per window element
  c.backward_input_flops = out_numel(node, graph);  // scatter-add of dY
  c.bytes = io_bytes(node, graph);
  return c;
}

OpCost cost_gemm(const Node& node, const Graph& graph) {
  Shape a = static_in(node, graph, 0);
  double k = a.size() == 2 ? static_cast<double>(node.attr_int("transA", 0) ? a[0] : a[1]) : 0;
  double outputs = out_numel(node, graph);
  double bias = has_input(node, 2) ? outputs : 0;
  OpCost c;
  c.flops = 2 * outputs * k + bias;
  c.backward_input_flops = 2 * outputs * k;
  c.backward_weight_flops = 2 * outputs * k + bias;
  c.bytes = io_bytes(node, graph);
  return c;
}

OpCost cost_matmul(const Node& node, const Graph& graph) {
  Shape a = static_in(node, graph, 0);
  double k = a.empty() ? 0 : static_cast<double>(a.back());
  OpCost c;
  c.flops = 2 * out_numel(node, graph) * k;
  c.backward_input_flops = c.flops;
  c.backward_weight_flops = c.flops;
  c.bytes = io_bytes(node, graph);
  return c;
}

OpCost cost_reduce(const Node& node, const Graph& graph) {
  OpCost c;
  for (size_t i = 0; i < node.inputs.size(); ++i)
    if (i == 0 || node.op == "Sum") c.flops += in_numel(node, graph, i);
  c.backward_input_flops = in_numel(node, graph, 0) * (node.op == "Sum" ? static_cast<double>(node.inputs.size()) : 1);
  c.bytes = io_bytes(node, graph);
  return c;
}

OpCost cost_softmax_ce_loss(const Node& node, const Graph& graph) {
  double scores = in_numel(node, graph, 0);
  OpCost c;
  c.flops = 5 * scores;  // max, subtract, exp, sum, log + pick
  c.backward_input_flops = 2 * scores;
  c.bytes = io_bytes(node, graph);
  return c;
}

OpCost cost_conv_grad_input(const Node& node, const Graph& graph) {
  Shape dx = has_output(node, 0) ? out_shape(node, graph, 0) : Shape{};
  ConvGeometry g = checked_geometry(node, dx, static_in(node, graph, 1));
  OpCost c;
  c.flops = 2 * g.macs();
  c.bytes = io_bytes(node, graph);
  return c;
}

OpCost cost_conv_grad_weight(const Node& node, const Graph& graph) {
  ConvGeometry g = checked_geometry(node, static_in(node, graph, 1), out_shape(node, graph, 0));
  OpCost c;
  c.flops = 2 * g.macs() + (has_output(node, 1) ? in_numel(node, graph, 0) : 0);
  c.bytes = io_bytes(node, graph);
  return c;
}

OpCost cost_maxpool_grad(const Node& node, const Graph& graph) {
  OpCost c;
  c.flops = in_numel(node, graph, 0);
  c.bytes = io_bytes(node, graph);
  return c;
}

}  // namespace ravnest::fe::rules
