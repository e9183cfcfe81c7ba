// Op family: data movement (see frontend/op_families.h). Transpose, Reshape,
// Flatten, Identity, Unsqueeze, Squeeze, Concat, Split, Slice, Gather, Expand,
// Pad, Tile, Cast, Dropout, and the ai.ravnest gradient ops SliceGrad,
// GatherGrad and DropoutGrad (docs/training-ops.md, "Data movement").
//
// Guarantees: every row keeps the core table's shape and fold rules for the ops
// it takes over; every gradient rule emits B work for activations and W work for
// parameters through GradBuilder::emit, and only for inputs that need it; values
// a rule needs at compile time (Slice starts, Pad pads, Dropout ratio) must be
// constants, else the shape rule fails naming the node and the input.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "frontend/gradients.h"
#include "frontend/grad_util.h"
#include "frontend/op_families.h"
#include "frontend/rule_util.h"
#include "frontend/rules.h"

namespace ravnest::fe {
namespace {

using namespace rules;  // NOLINT: the rows read as lists of rule names

TensorData ints_tensor(const std::vector<int64_t>& values) {
  return TensorData::from_ints(values, {static_cast<int64_t>(values.size())});
}

// ---- geometry shared by shape and gradient rules ----

// Sizes of Split's outputs along its axis: the `split` input (opset 13+) or
// attribute (older), else num_outputs (opset 18: the last part may be smaller),
// else equal parts over the outputs.
Result<std::vector<int64_t>> split_sizes(const Node& node, const Graph& graph, int64_t dim) {
  const int64_t parts = static_cast<int64_t>(node.outputs.size());
  if (parts == 0) return node_error(node, "has no outputs");
  std::vector<int64_t> sizes;
  if (has_input(node, 1)) {
    RN_ASSIGN_OR_RETURN(sizes, const_ints(node, graph, 1, "split"));
  } else if (node.has_attr("split")) {
    sizes = node.attr_ints("split");
  } else {
    if (node.has_attr("num_outputs") && node.attr_int("num_outputs", 0) != parts)
      return node_error(node, "num_outputs is ", node.attr_int("num_outputs", 0), " but the node has ", parts,
                        " outputs");
    int64_t chunk = (dim + parts - 1) / parts;
    if (!node.has_attr("num_outputs") && dim % parts != 0)
      return node_error(node, "dim ", dim, " does not split into ", parts, " equal parts; give the split input");
    for (int64_t i = 0; i < parts; ++i) sizes.push_back(std::clamp<int64_t>(dim - i * chunk, 0, chunk));
  }
  if (static_cast<int64_t>(sizes.size()) != parts)
    return node_error(node, "split has ", sizes.size(), " sizes but the node has ", parts, " outputs");
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0) return node_error(node, "split size ", s, " is negative");
    total += s;
  }
  if (total != dim) return node_error(node, "split sizes ", shape_str(sizes), " sum to ", total, ", not dim ", dim);
  return sizes;
}

// Pad's begin/end amounts for every axis of a rank-`rank` input (pads input,
// restricted to the opset-18 axes input when given). Negative pads crop.
struct PadPlan {
  std::vector<int64_t> begin, end;
};

Result<PadPlan> pad_plan(const Node& node, const Graph& graph, const Shape& x) {
  const int64_t rank = static_cast<int64_t>(x.size());
  std::string mode = node.attr_string("mode", "constant");
  if (mode != "constant")
    return error(Code::kUnsupported, node.describe(), ": attribute mode='", mode,
                 "' is not supported (only 'constant'); re-export with zero or constant padding");
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> pads, const_ints(node, graph, 1, "pads"));
  std::vector<int64_t> axes(static_cast<size_t>(rank));
  std::iota(axes.begin(), axes.end(), 0);
  if (has_input(node, 3)) {
    RN_ASSIGN_OR_RETURN(axes, const_ints(node, graph, 3, "axes"));
  }
  if (pads.size() != 2 * axes.size())
    return node_error(node, "pads has ", pads.size(), " values, expected ", 2 * axes.size(), " (begin and end for ",
                      axes.size(), " axes)");
  PadPlan plan{std::vector<int64_t>(x.size(), 0), std::vector<int64_t>(x.size(), 0)};
  for (size_t i = 0; i < axes.size(); ++i) {
    RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, axes[i], rank));
    plan.begin[static_cast<size_t>(axis)] = pads[i];
    plan.end[static_cast<size_t>(axis)] = pads[i + axes.size()];
  }
  for (size_t d = 0; d < x.size(); ++d)
    if (x[d] + plan.begin[d] + plan.end[d] < 0)
      return node_error(node, "pads ", shape_str(pads), " crop axis ", d, " of ", shape_str(x), " below zero");
  return plan;
}

// Dropout's ratio (default 0.5) and whether it drops at all at compile time
// (training_mode true and ratio > 0).
struct DropoutParams {
  float ratio = 0.5f;
  bool training = false;
};

Result<DropoutParams> dropout_params(const Node& node, const Graph& graph) {
  DropoutParams p;
  if (has_input(node, 1)) {
    const TensorData* ratio = const_input(node, graph, 1);
    if (!ratio || ratio->numel() != 1)
      return node_error(node, "ratio input '", node.inputs[1], "' must be a constant scalar");
    p.ratio = static_cast<float>(ratio->as_doubles()[0]);
  }
  if (!(p.ratio >= 0.0f && p.ratio < 1.0f)) return node_error(node, "ratio ", p.ratio, " is not in [0, 1)");
  if (has_input(node, 2)) {
    const TensorData* mode = const_input(node, graph, 2);
    if (!mode || mode->numel() != 1)
      return node_error(node, "training_mode input '", node.inputs[2],
                        "' must be a constant boolean; Ravnest decides training vs evaluation per run");
    p.training = mode->as_doubles()[0] != 0;
  }
  return p;
}

// ---- shape rules of the ops this family adds ----

Status shape_split(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, node.attr_int("axis", 0), static_cast<int64_t>(x.size())));
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> sizes, split_sizes(node, graph, x[static_cast<size_t>(axis)]));
  for (size_t i = 0; i < sizes.size(); ++i) {
    Shape y = x;
    y[static_cast<size_t>(axis)] = sizes[i];
    set_out(graph, node, i, dtype, y);
  }
  return ok_status();
}

Status shape_expand(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> shape, const_ints(node, graph, 1, "shape"));
  RN_ASSIGN_OR_RETURN(Shape y, broadcast(node, x, shape));
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_pad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(PadPlan plan, pad_plan(node, graph, x));
  if (has_input(node, 2)) {
    RN_ASSIGN_OR_RETURN(Shape value, in_shape(node, graph, 2));
    if (numel(value) != 1) return node_error(node, "constant_value must be a scalar, has shape ", shape_str(value));
  }
  Shape y = x;
  for (size_t d = 0; d < x.size(); ++d) y[d] += plan.begin[d] + plan.end[d];
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_tile(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> repeats, const_ints(node, graph, 1, "repeats"));
  if (repeats.size() != x.size())
    return node_error(node, "repeats has ", repeats.size(), " values for an input of rank ", x.size());
  Shape y = x;
  for (size_t d = 0; d < x.size(); ++d) {
    if (repeats[d] < 0) return node_error(node, "repeats ", shape_str(repeats), " has a negative value");
    if (mul_overflows(x[d], repeats[d], &y[d])) return node_error(node, "repeats ", shape_str(repeats), " overflow");
  }
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_dropout(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (!is_float(dtype)) return node_error(node, "input must be a float tensor, is ", dtype_name(dtype));
  RN_RETURN_IF_ERROR(dropout_params(node, graph).status());
  set_out(graph, node, 0, dtype, x);
  set_out(graph, node, 1, DType::kBool, x);
  return ok_status();
}

// SliceGrad(dY, starts, ends, axes?, steps?) with attribute shape = the forward data's shape.
Status shape_slice_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (!node.has_attr("shape")) return node_error(node, "needs attribute 'shape' (the sliced tensor's shape)");
  Shape data = node.attr_ints("shape");
  RN_ASSIGN_OR_RETURN(std::vector<SliceAxis> plan, slice_plan(node, graph, data));
  Shape sliced;
  for (const SliceAxis& a : plan) sliced.push_back(a.len);
  if (sliced != dy)
    return node_error(node, "slicing ", shape_str(data), " gives ", shape_str(sliced), ", but dY is ", shape_str(dy));
  set_out(graph, node, 0, dtype, data);
  return ok_status();
}

// GatherGrad(dY, indices) with attributes axis and shape = the forward data's shape.
Status shape_gather_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape indices, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType index_type, in_dtype(node, graph, 1));
  if (index_type != DType::kI64 && index_type != DType::kI32)
    return node_error(node, "indices must be int64 or int32, got ", dtype_name(index_type));
  if (!node.has_attr("shape")) return node_error(node, "needs attribute 'shape' (the gathered tensor's shape)");
  Shape data = node.attr_ints("shape");
  RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, node.attr_int("axis", 0), static_cast<int64_t>(data.size())));
  Shape expected(data.begin(), data.begin() + axis);
  expected.insert(expected.end(), indices.begin(), indices.end());
  expected.insert(expected.end(), data.begin() + axis + 1, data.end());
  if (expected != dy)
    return node_error(node, "dY is ", shape_str(dy), " but gathering ", shape_str(indices), " from ", shape_str(data),
                      " on axis ", axis, " gives ", shape_str(expected));
  set_out(graph, node, 0, dtype, data);
  return ok_status();
}

// DropoutGrad(dY, mask) with attribute ratio.
Status shape_dropout_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape mask, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType mask_type, in_dtype(node, graph, 1));
  if (mask_type != DType::kBool) return node_error(node, "mask must be bool, is ", dtype_name(mask_type));
  if (dy != mask) return node_error(node, "dY ", shape_str(dy), " and mask ", shape_str(mask), " differ");
  float ratio = node.attr_float("ratio", 0.5f);
  if (!(ratio >= 0.0f && ratio < 1.0f)) return node_error(node, "ratio ", ratio, " is not in [0, 1)");
  set_out(graph, node, 0, dtype, dy);
  return ok_status();
}

// ---- cost rules ----

// Data movement whose backward is a scatter or reduction of dY: one add per
// output element, on the W side when input 0 is a parameter, else the B side.
OpCost cost_scatter_backward(const Node& node, const Graph& graph) {
  OpCost c = cost_data_movement(node, graph);
  double adds = has_output(node, 0) ? value_numel(graph, node.outputs[0]) : 0;
  if (graph.parameters.count(node.inputs[0])) c.backward_weight_flops = adds;
  else c.backward_input_flops = adds;
  return c;
}

// Gradient ops that add each dY element once (GatherGrad, DropoutGrad).
OpCost cost_one_add_per_input(const Node& node, const Graph& graph) {
  OpCost c = cost_data_movement(node, graph);
  c.flops = value_numel(graph, node.inputs[0]);
  return c;
}

// Dropout: a hash, a compare and a multiply per element; B work is a multiply.
OpCost cost_dropout(const Node& node, const Graph& graph) {
  OpCost c = cost_data_movement(node, graph);
  double n = value_numel(graph, node.inputs[0]);
  c.flops = 3 * n;
  c.backward_input_flops = n;
  return c;
}

// ---- gradient rules ----

// Emits `n` with one output dx for `target` and contributes it.
void emit_grad(GradBuilder& b, Node n, const std::string& target) {
  std::string dx = n.outputs[0];
  b.emit(std::move(n), target);
  b.contribute(target, dx);
}

Status grad_transpose(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  const size_t rank = b.info(x).static_shape().size();
  std::vector<int64_t> perm(rank);
  for (size_t i = 0; i < rank; ++i) perm[i] = static_cast<int64_t>(rank - 1 - i);
  perm = node.attr_ints("perm", perm);
  std::vector<int64_t> inverse(rank);
  for (size_t i = 0; i < rank; ++i) inverse[static_cast<size_t>(perm[i])] = static_cast<int64_t>(i);
  Node n = make_node(node.name + "/grad", "Transpose", {b.grad(node.outputs[0])}, {grad_value(b, x)});
  n.attrs["perm"] = inverse;
  emit_grad(b, std::move(n), x);
  return ok_status();
}

// dY sliced back into one piece per input: input i covers [offset_i, offset_i + dim_i) on the axis.
Status grad_concat(const Node& node, GradBuilder& b) {
  std::string dy = b.grad(node.outputs[0]);
  const int64_t rank = static_cast<int64_t>(b.info(node.outputs[0]).static_shape().size());
  RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, node.attr_int("axis", 0), rank));
  int64_t offset = 0;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    const std::string& x = node.inputs[i];
    int64_t dim = b.info(x).static_shape()[static_cast<size_t>(axis)];
    if (wants(b, node, i)) {
      std::string starts = b.constant("starts", ints_tensor({offset}));
      std::string ends = b.constant("ends", ints_tensor({offset + dim}));
      std::string axes = b.constant("axes", ints_tensor({axis}));
      emit_grad(b, make_node(node.name + "/grad" + std::to_string(i), "Slice", {dy, starts, ends, axes}, {grad_value(b, x)}),
                x);
    }
    offset += dim;
  }
  return ok_status();
}

// dX = Concat of the outputs' gradients along the axis, zeros for outputs no gradient reached.
Status grad_split(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  std::vector<std::string> parts;
  for (const std::string& out : node.outputs) {
    if (out.empty()) return error(Code::kUnsupported, "a Split with an omitted output has no gradient rule");
    std::string g = b.grad(out);
    if (g.empty()) {
      const ValueInfo& oi = b.info(out);
      TensorData zeros;
      zeros.dtype = oi.dtype;
      zeros.shape = oi.static_shape();
      zeros.bytes.assign(static_cast<size_t>(numel(zeros.shape)) * dtype_size(oi.dtype), 0);
      g = b.constant("zeros", std::move(zeros));
    }
    parts.push_back(g);
  }
  Node n = make_node(node.name + "/grad", "Concat", parts, {grad_value(b, x)});
  n.attrs["axis"] = node.attr_int("axis", 0);
  emit_grad(b, std::move(n), x);
  return ok_status();
}

Status grad_slice(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  std::vector<std::string> inputs = {b.grad(node.outputs[0])};
  for (size_t i = 1; i < node.inputs.size(); ++i) inputs.push_back(node.inputs[i]);
  Node n = make_node(node.name + "/grad", "SliceGrad", inputs, {grad_value(b, x)}, kRavnestDomain);
  n.attrs["shape"] = b.info(x).static_shape();
  emit_grad(b, std::move(n), x);
  return ok_status();
}

Status grad_gather(const Node& node, GradBuilder& b) {
  const std::string& data = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  Node n = make_node(node.name + "/grad", "GatherGrad", {b.grad(node.outputs[0]), input(node, 1)},
                     {grad_value(b, data)}, kRavnestDomain);
  n.attrs["shape"] = b.info(data).static_shape();
  n.attrs["axis"] = node.attr_int("axis", 0);
  emit_grad(b, std::move(n), data);
  return ok_status();
}

Status grad_expand(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (wants(b, node, 0)) b.contribute(x, b.reduce_to_shape(b.grad(node.outputs[0]), b.info(x).static_shape(), x));
  return ok_status();
}

// dX = dY[begin : begin + dim] on every axis (constant padding is not differentiable w.r.t. its value).
Status grad_pad(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (wants(b, node, 2))
    return error(Code::kUnsupported, "a gradient into Pad's constant_value is not supported; make it a constant");
  if (!wants(b, node, 0)) return ok_status();
  Shape xs = b.info(x).static_shape();
  RN_ASSIGN_OR_RETURN(PadPlan plan, pad_plan(node, b.forward(), xs));
  for (int64_t p : plan.begin)
    if (p < 0) return error(Code::kUnsupported, "gradient of a Pad with negative (cropping) pads is not supported");
  for (int64_t p : plan.end)
    if (p < 0) return error(Code::kUnsupported, "gradient of a Pad with negative (cropping) pads is not supported");
  std::vector<int64_t> ends(xs.size()), axes(xs.size());
  for (size_t d = 0; d < xs.size(); ++d) {
    ends[d] = plan.begin[d] + xs[d];
    axes[d] = static_cast<int64_t>(d);
  }
  std::string starts_c = b.constant("starts", ints_tensor(plan.begin));
  std::string ends_c = b.constant("ends", ints_tensor(ends));
  std::string axes_c = b.constant("axes", ints_tensor(axes));
  emit_grad(b, make_node(node.name + "/grad", "Slice", {b.grad(node.outputs[0]), starts_c, ends_c, axes_c}, {grad_value(b, x)}),
            x);
  return ok_status();
}

// Y viewed as [r0, d0, r1, d1, ...]: dX sums dY over the repeat axes.
Status grad_tile(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  Shape xs = b.info(x).static_shape();
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> repeats, const_ints(node, b.forward(), 1, "repeats"));
  std::string dy = b.grad(node.outputs[0]);
  DType dtype = b.info(dy).dtype;
  Shape split_shape;
  std::vector<int64_t> axes;
  for (size_t d = 0; d < xs.size(); ++d) {
    axes.push_back(static_cast<int64_t>(split_shape.size()));
    split_shape.push_back(repeats[d]);
    split_shape.push_back(xs[d]);
  }
  std::string viewed = b.new_value("tile/" + x, dtype, split_shape);
  b.emit(make_node(node.name + "/grad_view", "Reshape", {dy, b.constant("shape", ints_tensor(split_shape))}, {viewed}),
         x);
  Node sum = make_node(node.name + "/grad", "ReduceSum", {viewed, b.constant("axes", ints_tensor(axes))},
                       {grad_value(b, x)});
  sum.attrs["keepdims"] = int64_t{0};
  emit_grad(b, std::move(sum), x);
  return ok_status();
}

Status grad_cast(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  DType from = b.info(x).dtype, to = b.info(node.outputs[0]).dtype;
  if (!is_float(from) || !is_float(to)) return ok_status();  // no gradient through integers
  std::string dy = b.grad(node.outputs[0]);
  if (from == to) {
    b.contribute(x, dy);
    return ok_status();
  }
  Node n = make_node(node.name + "/grad", "Cast", {dy}, {grad_value(b, x)});
  n.attrs["to"] = static_cast<int64_t>(from);
  emit_grad(b, std::move(n), x);
  return ok_status();
}

Status grad_dropout(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  RN_ASSIGN_OR_RETURN(DropoutParams p, dropout_params(node, b.forward()));
  std::string dy = b.grad(node.outputs[0]);
  if (!p.training || p.ratio == 0.0f) {  // identity at every run
    b.contribute(x, dy);
    return ok_status();
  }
  std::string mask = b.forward_output(node.name, 1, DType::kBool, b.info(x).static_shape());
  Node n = make_node(node.name + "/grad", "DropoutGrad", {dy, mask}, {grad_value(b, x)}, kRavnestDomain);
  n.attrs["ratio"] = p.ratio;
  emit_grad(b, std::move(n), x);
  return ok_status();
}

OpDef movement(const char* op, ShapeFn shape, GradFn grad, CostFn cost = cost_data_movement) {
  return with_grad(op_row(op, std::move(shape), std::move(cost)), std::move(grad));
}

}  // namespace

std::vector<OpDef> movement_ops() {
  std::vector<OpDef> t;
  t.push_back(movement("Transpose", shape_transpose, grad_transpose));
  t.push_back(with_fold(movement("Reshape", shape_reshape, grad_reshape), fold_copy));
  t.push_back(movement("Flatten", shape_flatten, grad_reshape));
  t.push_back(with_fold(movement("Identity", shape_same, grad_identity), fold_copy));
  t.push_back(with_fold(movement("Unsqueeze", shape_unsqueeze, grad_reshape), fold_copy));
  t.push_back(with_fold(movement("Squeeze", shape_squeeze, grad_reshape), fold_copy));
  t.push_back(with_fold(movement("Concat", shape_concat, grad_concat), fold_concat));
  t.push_back(movement("Split", shape_split, grad_split));
  t.push_back(with_fold(movement("Slice", shape_slice, grad_slice), fold_slice));
  t.push_back(with_fold(movement("Gather", shape_gather, grad_gather, cost_scatter_backward), fold_gather));
  t.push_back(movement("Expand", shape_expand, grad_expand, cost_scatter_backward));
  t.push_back(movement("Pad", shape_pad, grad_pad));
  t.push_back(movement("Tile", shape_tile, grad_tile, cost_scatter_backward));
  t.push_back(with_fold(movement("Cast", shape_cast, grad_cast), fold_cast));
  t.push_back(movement("Dropout", shape_dropout, grad_dropout, cost_dropout));
  t.push_back(ravnest_op_row("SliceGrad", shape_slice_grad, cost_data_movement));
  t.push_back(ravnest_op_row("GatherGrad", shape_gather_grad, cost_one_add_per_input));
  t.push_back(ravnest_op_row("DropoutGrad", shape_dropout_grad, cost_one_add_per_input));
  return t;
}

}  // namespace ravnest::fe
