// Op family "normalization": BatchNormalization (training and evaluation form),
// LayerNormalization, AveragePool, GlobalAveragePool, and their ai.ravnest gradient
// ops (docs/training-ops.md, section "Normalization and pooling"). Conv and MaxPool
// keep their core rows (frontend/op_table.cc).
//
// Guarantees: every shape rule checks the parameter shapes against X and names the
// node and the shapes on error; the gradient rules split B work (dX, computed whole
// inside one B node that reads only forward values and dY) from W work (dScale,
// dBias); no gradient rule reads a W node's output. The window geometry of the
// pools comes from rules::pool_output, the same helper as MaxPool's.
#include <cmath>

#include "frontend/grad_util.h"
#include "frontend/op_families.h"
#include "frontend/rule_util.h"

namespace ravnest::fe {
namespace {

using rules::has_input;
using rules::has_output;
using rules::in_dtype;
using rules::in_shape;
using rules::node_error;
using rules::set_out;

// Bytes read + written by a node (every present input and output once).
double io_bytes(const Node& node, const Graph& graph) {
  double bytes = 0;
  for (const std::string& v : node.inputs)
    if (!v.empty()) bytes += rules::value_bytes(graph, v);
  for (const std::string& v : node.outputs)
    if (!v.empty()) bytes += rules::value_bytes(graph, v);
  return bytes;
}

double numel_of(const Graph& graph, const std::string& value) { return rules::value_numel(graph, value); }

// Checks that input i is a per-channel vector [C].
Status check_channel_vector(const Node& node, const Graph& graph, size_t i, int64_t c, const char* what) {
  RN_ASSIGN_OR_RETURN(Shape s, in_shape(node, graph, i));
  if (s != Shape{c})
    return node_error(node, what, " '", node.inputs[i], "' has shape ", shape_str(s), ", expected [", c,
                      "] (one value per channel of X)");
  return ok_status();
}

// ---------------------------------------------------------------- BatchNormalization

bool bn_training(const Node& node) { return node.attr_int("training_mode", 0) != 0; }

Status shape_batchnorm(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (x.size() < 2) return node_error(node, "X must be [N, C, ...], got ", shape_str(x));
  const char* names[] = {"", "scale", "B", "input_mean", "input_var"};
  for (size_t i = 1; i <= 4; ++i) RN_RETURN_IF_ERROR(check_channel_vector(node, graph, i, x[1], names[i]));
  const bool extra_outputs = has_output(node, 1) || has_output(node, 2) || has_output(node, 3) || has_output(node, 4);
  if (graph.opset > 0 && graph.opset < 14 && extra_outputs)
    return node_error(node, "the opset ", graph.opset,
                      " training form (outputs mean, var, saved_mean, saved_var) is not supported; re-export the model "
                      "with opset_version >= 14 (training_mode attribute)");
  if (has_output(node, 3) || has_output(node, 4))
    return node_error(node, "has ", node.outputs.size(), " outputs; opset 14+ BatchNormalization has at most 3");
  if (!bn_training(node) && (has_output(node, 1) || has_output(node, 2)))
    return node_error(node, "outputs running_mean/running_var are only valid with training_mode=1");
  set_out(graph, node, 0, dtype, x);
  set_out(graph, node, 1, dtype, {x[1]});
  set_out(graph, node, 2, dtype, {x[1]});
  return ok_status();
}

OpCost cost_batchnorm(const Node& node, const Graph& graph) {
  const double n = has_input(node, 0) ? numel_of(graph, node.inputs[0]) : 0;
  OpCost c;
  // Training: sum and sum of squares (3/element), then scale and shift (2/element); eval: 2/element.
  c.flops = (bn_training(node) ? 5 : 2) * n;
  c.backward_input_flops = (bn_training(node) ? 8 : 2) * n;  // statistics + two reductions + dX
  c.backward_weight_flops = 6 * n;                           // statistics + sum(dY), sum(dY * xhat)
  c.bytes = io_bytes(node, graph);
  return c;
}

// BatchNormalizationGrad: dY, X, scale[, mean, var] -> dX.
Status shape_batchnorm_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (dy != x || x.size() < 2) return node_error(node, "dY ", shape_str(dy), " and X ", shape_str(x), " must be equal [N, C, ...] shapes");
  RN_RETURN_IF_ERROR(check_channel_vector(node, graph, 2, x[1], "scale"));
  if (!bn_training(node)) {
    RN_RETURN_IF_ERROR(check_channel_vector(node, graph, 3, x[1], "mean"));
    RN_RETURN_IF_ERROR(check_channel_vector(node, graph, 4, x[1], "var"));
  }
  set_out(graph, node, 0, dtype, x);
  return ok_status();
}

// BatchNormalizationParamGrad: dY, X[, mean, var] -> dScale, dBias (each optional).
Status shape_batchnorm_param_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (dy != x || x.size() < 2) return node_error(node, "dY ", shape_str(dy), " and X ", shape_str(x), " must be equal [N, C, ...] shapes");
  if (!bn_training(node)) {
    RN_RETURN_IF_ERROR(check_channel_vector(node, graph, 2, x[1], "mean"));
    RN_RETURN_IF_ERROR(check_channel_vector(node, graph, 3, x[1], "var"));
  }
  set_out(graph, node, 0, dtype, {x[1]});
  set_out(graph, node, 1, dtype, {x[1]});
  return ok_status();
}

OpCost cost_batchnorm_grad(const Node& node, const Graph& graph) {
  OpCost c;
  c.flops = (bn_training(node) ? 8 : 2) * (has_input(node, 0) ? numel_of(graph, node.inputs[0]) : 0);
  c.bytes = io_bytes(node, graph);
  return c;
}

OpCost cost_batchnorm_param_grad(const Node& node, const Graph& graph) {
  OpCost c;
  c.flops = 6 * (has_input(node, 0) ? numel_of(graph, node.inputs[0]) : 0);
  c.bytes = io_bytes(node, graph);
  return c;
}

// Copies the attributes a BatchNormalization gradient op needs.
void copy_bn_attrs(const Node& from, Node& to) {
  to.attrs["epsilon"] = from.attr_float("epsilon", 1e-5f);
  to.attrs["training_mode"] = int64_t{bn_training(from) ? 1 : 0};
}

Status grad_batchnorm(const Node& node, GradBuilder& b) {
  for (size_t i = 1; i < node.outputs.size(); ++i)
    if (has_output(node, i) && !b.grad(node.outputs[i]).empty())
      return error(Code::kUnsupported, node.describe(), ": a gradient flowing into the running statistics output ", i,
                   " is not supported (they are state, not activations)");
  const std::string dy = b.grad(node.outputs[0]);
  if (dy.empty()) return ok_status();
  const bool training = bn_training(node);
  const std::string& x = input(node, 0);
  // Evaluation form: the statistics are the (constant) running ones, read by the gradient ops.
  std::vector<std::string> stats;
  if (!training) stats = {input(node, 3), input(node, 4)};
  if (wants(b, node, 0)) {
    const std::string dx = grad_value(b, x);
    std::vector<std::string> ins = {dy, x, input(node, 1)};
    ins.insert(ins.end(), stats.begin(), stats.end());
    Node n = make_node(node.name + "/grad_input", "BatchNormalizationGrad", ins, {dx}, kRavnestDomain);
    copy_bn_attrs(node, n);
    b.emit(std::move(n), x);
    b.contribute(x, dx);
  }
  const bool want_scale = wants(b, node, 1), want_bias = wants(b, node, 2);
  if (want_scale || want_bias) {
    const std::string dscale = want_scale ? grad_value(b, input(node, 1)) : "";
    const std::string dbias = want_bias ? grad_value(b, input(node, 2)) : "";
    std::vector<std::string> ins = {dy, x};
    ins.insert(ins.end(), stats.begin(), stats.end());
    Node n = make_node(node.name + "/grad_params", "BatchNormalizationParamGrad", ins, {dscale, dbias}, kRavnestDomain);
    copy_bn_attrs(node, n);
    b.emit(std::move(n), want_scale ? input(node, 1) : input(node, 2));
    if (want_scale) b.contribute(input(node, 1), dscale);
    if (want_bias) b.contribute(input(node, 2), dbias);
  }
  return ok_status();
}

// ---------------------------------------------------------------- LayerNormalization

// [outer, inner] split of X at the normalisation axis.
struct LayerNormSplit {
  int64_t axis = 0;
  Shape stat_shape;  // X's dims before axis, then 1s
};

Result<LayerNormSplit> layernorm_split(const Node& node, const Shape& x) {
  const int64_t rank = static_cast<int64_t>(x.size());
  if (rank < 1) return node_error(node, "X must have rank >= 1");
  LayerNormSplit s;
  RN_ASSIGN_OR_RETURN(s.axis, rules::norm_axis(node, node.attr_int("axis", -1), rank));
  s.stat_shape = x;
  for (int64_t i = s.axis; i < rank; ++i) s.stat_shape[static_cast<size_t>(i)] = 1;
  return s;
}

Shape normalized_shape(const Shape& x, int64_t axis) { return Shape(x.begin() + axis, x.end()); }

Status shape_layernorm(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(LayerNormSplit s, layernorm_split(node, x));
  if (node.attr_int("stash_type", 1) != 1)
    return node_error(node, "stash_type ", node.attr_int("stash_type", 1), " is not supported (only 1, float32)");
  const Shape norm = normalized_shape(x, s.axis);
  for (size_t i : {size_t{1}, size_t{2}}) {
    if (i == 2 && !has_input(node, 2)) continue;
    RN_ASSIGN_OR_RETURN(Shape p, in_shape(node, graph, i));
    if (p != norm)
      return node_error(node, i == 1 ? "Scale" : "B", " '", node.inputs[i], "' has shape ", shape_str(p),
                        ", expected the normalized shape ", shape_str(norm), " of X ", shape_str(x));
  }
  set_out(graph, node, 0, dtype, x);
  set_out(graph, node, 1, DType::kF32, s.stat_shape);
  set_out(graph, node, 2, DType::kF32, s.stat_shape);
  return ok_status();
}

OpCost cost_layernorm(const Node& node, const Graph& graph) {
  const double n = has_input(node, 0) ? numel_of(graph, node.inputs[0]) : 0;
  OpCost c;
  c.flops = 5 * n;                  // mean, variance, normalise, scale, shift
  c.backward_input_flops = 7 * n;   // two row reductions and dX
  c.backward_weight_flops = 4 * n;  // xhat, dY * xhat, two column sums
  c.bytes = io_bytes(node, graph);
  return c;
}

// Checks X against the [outer..., 1...] statistics input i.
Status check_layernorm_stats(const Node& node, const Graph& graph, const Shape& x, size_t i) {
  RN_ASSIGN_OR_RETURN(LayerNormSplit s, layernorm_split(node, x));
  RN_ASSIGN_OR_RETURN(Shape stat, in_shape(node, graph, i));
  if (stat != s.stat_shape)
    return node_error(node, "statistics input '", node.inputs[i], "' has shape ", shape_str(stat), ", expected ",
                      shape_str(s.stat_shape), " for X ", shape_str(x));
  return ok_status();
}

// LayerNormalizationGrad: dY, X, Scale, Mean, InvStdDev -> dX.
Status shape_layernorm_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (dy != x) return node_error(node, "dY ", shape_str(dy), " and X ", shape_str(x), " differ");
  RN_ASSIGN_OR_RETURN(LayerNormSplit s, layernorm_split(node, x));
  RN_ASSIGN_OR_RETURN(Shape scale, in_shape(node, graph, 2));
  if (scale != normalized_shape(x, s.axis))
    return node_error(node, "Scale ", shape_str(scale), " is not the normalized shape of X ", shape_str(x));
  RN_RETURN_IF_ERROR(check_layernorm_stats(node, graph, x, 3));
  RN_RETURN_IF_ERROR(check_layernorm_stats(node, graph, x, 4));
  set_out(graph, node, 0, dtype, x);
  return ok_status();
}

// LayerNormalizationParamGrad: dY, X, Mean, InvStdDev -> dScale, dB (each optional).
Status shape_layernorm_param_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (dy != x) return node_error(node, "dY ", shape_str(dy), " and X ", shape_str(x), " differ");
  RN_ASSIGN_OR_RETURN(LayerNormSplit s, layernorm_split(node, x));
  RN_RETURN_IF_ERROR(check_layernorm_stats(node, graph, x, 2));
  RN_RETURN_IF_ERROR(check_layernorm_stats(node, graph, x, 3));
  set_out(graph, node, 0, dtype, normalized_shape(x, s.axis));
  set_out(graph, node, 1, dtype, normalized_shape(x, s.axis));
  return ok_status();
}

OpCost cost_layernorm_grad(const Node& node, const Graph& graph) {
  OpCost c;
  c.flops = (node.op == "LayerNormalizationGrad" ? 7 : 4) * (has_input(node, 0) ? numel_of(graph, node.inputs[0]) : 0);
  c.bytes = io_bytes(node, graph);
  return c;
}

Status grad_layernorm(const Node& node, GradBuilder& b) {
  for (size_t i = 1; i < node.outputs.size(); ++i)
    if (has_output(node, i) && !b.grad(node.outputs[i]).empty())
      return error(Code::kUnsupported, node.describe(), ": a gradient flowing into the Mean/InvStdDev output ", i,
                   " is not supported");
  const std::string dy = b.grad(node.outputs[0]);
  if (dy.empty()) return ok_status();
  const std::string& x = input(node, 0);
  const Shape xs = b.info(x).static_shape();
  RN_ASSIGN_OR_RETURN(LayerNormSplit s, layernorm_split(node, xs));
  const std::string mean = b.forward_output(node.name, 1, DType::kF32, s.stat_shape);
  const std::string inv_std = b.forward_output(node.name, 2, DType::kF32, s.stat_shape);
  const int64_t axis = s.axis;
  if (wants(b, node, 0)) {
    const std::string dx = grad_value(b, x);
    Node n = make_node(node.name + "/grad_input", "LayerNormalizationGrad", {dy, x, input(node, 1), mean, inv_std}, {dx},
                       kRavnestDomain);
    n.attrs["axis"] = axis;
    b.emit(std::move(n), x);
    b.contribute(x, dx);
  }
  const bool want_scale = wants(b, node, 1), want_bias = wants(b, node, 2);
  if (want_scale || want_bias) {
    const std::string dscale = want_scale ? grad_value(b, input(node, 1)) : "";
    const std::string dbias = want_bias ? grad_value(b, input(node, 2)) : "";
    Node n = make_node(node.name + "/grad_params", "LayerNormalizationParamGrad", {dy, x, mean, inv_std},
                       {dscale, dbias}, kRavnestDomain);
    n.attrs["axis"] = axis;
    b.emit(std::move(n), want_scale ? input(node, 1) : input(node, 2));
    if (want_scale) b.contribute(input(node, 1), dscale);
    if (want_bias) b.contribute(input(node, 2), dbias);
  }
  return ok_status();
}

// ---------------------------------------------------------------- AveragePool, GlobalAveragePool

Status shape_avgpool(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape y, rules::pool_output(node, x));
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

double window_size(const Node& node) {
  double window = 1;
  for (int64_t d : node.attr_ints("kernel_shape", {1, 1})) window *= static_cast<double>(d);
  return window;
}

OpCost cost_avgpool(const Node& node, const Graph& graph) {
  const double out = has_output(node, 0) ? numel_of(graph, node.outputs[0]) : 0;
  OpCost c;
  c.flops = out * (window_size(node) + 1);  // window sum and one divide
  c.backward_input_flops = c.flops;
  c.bytes = io_bytes(node, graph);
  return c;
}

// The X shape a pooling gradient op reconstructs (attribute input_shape, set by the gradient rule).
Result<Shape> grad_input_shape(const Node& node) {
  Shape x = node.attr_ints("input_shape");
  if (x.size() != 4) return node_error(node, "attribute input_shape must give the 4-D shape of X, has ", x.size(), " values");
  return x;
}

// AveragePoolGrad: dY -> dX; attributes of the AveragePool plus input_shape.
Status shape_avgpool_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape x, grad_input_shape(node));
  RN_ASSIGN_OR_RETURN(Shape y, rules::pool_output(node, x));
  if (y != dy)
    return node_error(node, "input_shape ", shape_str(x), " gives an AveragePool output ", shape_str(y), ", not dY ",
                      shape_str(dy));
  set_out(graph, node, 0, dtype, x);
  return ok_status();
}

OpCost cost_avgpool_grad(const Node& node, const Graph& graph) {
  OpCost c;
  c.flops = (has_input(node, 0) ? numel_of(graph, node.inputs[0]) : 0) * (window_size(node) + 1);
  c.bytes = io_bytes(node, graph);
  return c;
}

Status shape_global_avgpool(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (x.size() < 3) return node_error(node, "X must be [N, C, spatial...], got ", shape_str(x));
  Shape y = x;
  for (size_t i = 2; i < y.size(); ++i) y[i] = 1;
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

OpCost cost_global_avgpool(const Node& node, const Graph& graph) {
  OpCost c;
  c.flops = has_input(node, 0) ? numel_of(graph, node.inputs[0]) : 0;
  c.backward_input_flops = c.flops;
  c.bytes = io_bytes(node, graph);
  return c;
}

// GlobalAveragePoolGrad: dY [N, C, 1...] -> dX (attribute input_shape) = dY / spatial size, broadcast.
Status shape_global_avgpool_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  Shape x = node.attr_ints("input_shape");
  Shape expected = x;
  for (size_t i = 2; i < expected.size(); ++i) expected[i] = 1;
  if (x.size() < 3 || expected != dy)
    return node_error(node, "input_shape ", shape_str(x), " does not reduce to dY ", shape_str(dy));
  set_out(graph, node, 0, dtype, x);
  return ok_status();
}

OpCost cost_global_avgpool_grad(const Node& node, const Graph& graph) {
  OpCost c;
  c.flops = has_output(node, 0) ? numel_of(graph, node.outputs[0]) : 0;
  c.bytes = io_bytes(node, graph);
  return c;
}

// AveragePool and GlobalAveragePool: one B node "<op>Grad" with the forward's attributes and X's shape.
Status grad_pool_mean(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  const std::string dx = grad_value(b, x);
  Node n = make_node(node.name + "/grad", node.op + "Grad", {b.grad(node.outputs[0])}, {dx}, kRavnestDomain);
  n.attrs = node.attrs;
  n.attrs["input_shape"] = b.info(x).static_shape();
  b.emit(std::move(n), x);
  b.contribute(x, dx);
  return ok_status();
}

// BatchNormalization's running mean and variance (inputs 3, 4) are state the
// kernel updates in place while training (Graph::state), not trained weights.
OpDef batchnorm_row() {
  OpDef d = with_grad(op_row("BatchNormalization", shape_batchnorm, cost_batchnorm), grad_batchnorm);
  d.state_inputs = {3, 4};
  return d;
}

}  // namespace

std::vector<OpDef> normalization_ops() {
  return {
      batchnorm_row(),
      with_grad(op_row("LayerNormalization", shape_layernorm, cost_layernorm), grad_layernorm),
      with_grad(op_row("AveragePool", shape_avgpool, cost_avgpool), grad_pool_mean),
      with_grad(op_row("GlobalAveragePool", shape_global_avgpool, cost_global_avgpool), grad_pool_mean),
      ravnest_op_row("BatchNormalizationGrad", shape_batchnorm_grad, cost_batchnorm_grad),
      ravnest_op_row("BatchNormalizationParamGrad", shape_batchnorm_param_grad, cost_batchnorm_param_grad),
      ravnest_op_row("LayerNormalizationGrad", shape_layernorm_grad, cost_layernorm_grad),
      ravnest_op_row("LayerNormalizationParamGrad", shape_layernorm_param_grad, cost_layernorm_grad),
      ravnest_op_row("AveragePoolGrad", shape_avgpool_grad, cost_avgpool_grad),
      ravnest_op_row("GlobalAveragePoolGrad", shape_global_avgpool_grad, cost_global_avgpool_grad),
  };
}

}  // namespace ravnest::fe
