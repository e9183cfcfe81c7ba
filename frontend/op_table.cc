// The op table (see op_table.h): one row per (domain, op) binding its opset range,
// shape rule, cost rule, gradient rule (frontend/gradients.cc) and, for
// shape-computing ops, its fold rule.
#include "frontend/op_table.h"

#include <algorithm>
#include <set>

#include "frontend/gradients.h"
#include "frontend/op_families.h"
#include "frontend/rules.h"

namespace ravnest::fe {
namespace {

using namespace rules;  // NOLINT: the table reads as a list of rule names

OpDef def(std::string op, ShapeFn shape, CostFn cost) { return op_row(std::move(op), std::move(shape), std::move(cost)); }
OpDef differentiable(OpDef d, GradFn grad) { return with_grad(std::move(d), std::move(grad)); }
OpDef foldable(OpDef d, FoldFn fold) { return with_fold(std::move(d), std::move(fold)); }
OpDef ravnest_op(std::string op, ShapeFn shape, CostFn cost) {
  return ravnest_op_row(std::move(op), std::move(shape), std::move(cost));
}

// Appends a family's rows: a row replaces the core row of the same (domain, op);
// an op defined by two families is a programming error caught at start-up.
void merge_family(std::vector<OpDef>& table, std::vector<OpDef> family, std::set<std::pair<std::string, std::string>>& seen) {
  for (OpDef& d : family) {
    auto key = std::make_pair(d.domain, d.op);
    RN_ENFORCE(seen.insert(key).second, "op ", d.op, " is defined by two op families");
    auto same = [&](const OpDef& row) { return row.domain == d.domain && row.op == d.op; };
    table.erase(std::remove_if(table.begin(), table.end(), same), table.end());
    table.push_back(std::move(d));
  }
}

std::vector<OpDef> build_table() {
  std::vector<OpDef> t;
  // Compute ops of the model.
  t.push_back(differentiable(def("Conv", shape_conv, cost_conv), grad_conv));
  t.push_back(differentiable(def("Relu", shape_same, cost_eltwise(1)), grad_relu));
  t.push_back(differentiable(def("MaxPool", shape_maxpool, cost_maxpool), grad_maxpool));
  t.push_back(differentiable(def("Gemm", shape_gemm, cost_gemm), grad_gemm));
  t.push_back(differentiable(def("MatMul", shape_matmul, cost_matmul), grad_matmul));
  t.push_back(def("Transpose", shape_transpose, cost_data_movement));
  t.push_back(def("ReduceSum", shape_reduce_sum, cost_reduce));
  t.push_back(def("Sum", shape_broadcast, cost_reduce));
  t.push_back(def("Softmax", shape_same, cost_eltwise(5)));  // max, subtract, exp, sum, divide
  t.push_back(differentiable(def("SoftmaxCrossEntropyLoss", shape_softmax_ce_loss, cost_softmax_ce_loss),
                                grad_softmax_cross_entropy));
  t.push_back(differentiable(def("Flatten", shape_flatten, cost_data_movement), grad_reshape));
  // Ops that compute on data or, with constant inputs, on shapes: folded when they can be.
  for (const char* op : {"Add", "Sub", "Mul", "Div"}) t.push_back(foldable(def(op, shape_broadcast, cost_eltwise(1)), fold_binary));
  for (OpDef& d : t) {
    if (d.op == "Add") d.grad = grad_add;
    if (d.op == "Sub") d.grad = grad_sub;
  }
  t.push_back(differentiable(foldable(def("Reshape", shape_reshape, cost_data_movement), fold_copy), grad_reshape));
  t.push_back(differentiable(foldable(def("Identity", shape_same, cost_data_movement), fold_copy), grad_identity));
  t.push_back(foldable(def("Unsqueeze", shape_unsqueeze, cost_data_movement), fold_copy));
  t.push_back(foldable(def("Squeeze", shape_squeeze, cost_data_movement), fold_copy));
  t.push_back(foldable(def("Constant", shape_constant, cost_data_movement), fold_constant));
  t.push_back(foldable(def("Gather", shape_gather, cost_data_movement), fold_gather));
  t.push_back(foldable(def("Concat", shape_concat, cost_data_movement), fold_concat));
  t.push_back(foldable(def("Cast", shape_cast, cost_data_movement), fold_cast));
  t.push_back(foldable(def("Slice", shape_slice, cost_data_movement), fold_slice));
  t.push_back(foldable(def("ConstantOfShape", shape_constant_of_shape, cost_data_movement), fold_constant_of_shape));
  t.push_back(foldable(def("Range", shape_range, cost_data_movement), fold_range));
  OpDef shape = foldable(def("Shape", shape_shape, cost_data_movement), fold_shape);
  shape.fold_from_shapes = true;
  t.push_back(std::move(shape));
  // ai.ravnest gradient and optimizer ops (docs/training-ops.md).
  t.push_back(ravnest_op("ConvGradInput", shape_conv_grad_input, cost_conv_grad_input));
  t.push_back(ravnest_op("ConvGradWeight", shape_conv_grad_weight, cost_conv_grad_weight));
  t.push_back(ravnest_op("ReluGrad", shape_relu_grad, cost_eltwise(1, false)));
  t.push_back(ravnest_op("MaxPoolGrad", shape_maxpool_grad, cost_maxpool_grad));
  t.push_back(ravnest_op("SoftmaxCrossEntropyLossGrad", shape_softmax_ce_loss_grad, cost_eltwise(2, false)));
  std::set<std::pair<std::string, std::string>> seen;
  for (auto family : {math_ops, movement_ops, normalization_ops, training_ops}) merge_family(t, family(), seen);
  for (OpDef& d : t) {
    if (!d.domain.empty()) continue;  // ai.ravnest ops: any opset (the domain is at version 1)
    d.min_opset = kMinOpset;
    d.max_opset = kMaxOpset;
  }
  return t;
}

}  // namespace

OpDef op_row(std::string op, ShapeFn shape, CostFn cost) {
  OpDef d;
  d.op = std::move(op);
  d.shape = std::move(shape);
  d.cost = std::move(cost);
  return d;
}

OpDef ravnest_op_row(std::string op, ShapeFn shape, CostFn cost) {
  OpDef d = op_row(std::move(op), std::move(shape), std::move(cost));
  d.domain = kRavnestDomain;
  return d;
}

OpDef with_grad(OpDef d, GradFn grad) {
  d.grad = std::move(grad);
  return d;
}

OpDef with_fold(OpDef d, FoldFn fold) {
  d.foldable = true;
  d.fold = std::move(fold);
  return d;
}

const std::vector<OpDef>& all_ops() {
  static const std::vector<OpDef> table = build_table();
  return table;
}

const OpDef* find_op(const std::string& domain, const std::string& op, int opset) {
  std::string d = domain == "ai.onnx" ? "" : domain;
  for (const OpDef& def : all_ops())
    if (def.op == op && def.domain == d && opset >= def.min_opset && opset <= def.max_opset) return &def;
  return nullptr;
}

Status check_op(const Node& node, int64_t opset) {
  int version = static_cast<int>(std::clamp<int64_t>(opset, 0, 1 << 20));
  if (find_op(node.domain, node.op, version)) return ok_status();
  std::string where = node.domain.empty() || node.domain == "ai.onnx"
                          ? "(opset " + std::to_string(opset) + ")"
                          : "(domain '" + node.domain + "', opset " + std::to_string(opset) + ")";
  std::set<std::string> supported;
  std::string range_note;
  for (const OpDef& def : all_ops()) {
    if (def.domain.empty()) supported.insert(def.op);
    if (def.op == node.op && def.domain == node.domain)
      range_note = " (supported in opsets " + std::to_string(def.min_opset) + " to " + std::to_string(def.max_opset) + ")";
  }
  std::string list;
  for (const std::string& op : supported) list += (list.empty() ? "" : ", ") + op;
  return error(Code::kUnsupported, "node '", node.name, "' has op '", node.op, "' ", where, range_note,
               ", which Ravnest does not support; supported ops: ", list);
}

}  // namespace ravnest::fe
