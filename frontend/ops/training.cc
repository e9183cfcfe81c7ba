// Op family "training": the ai.ravnest optimizer ops SGD, AdamW and LAMB
// (docs/training-ops.md, "Optimizers"), and the ai.ravnest loss MseLoss with its
// gradient MseLossGrad (docs/training-ops.md, "Losses"). This family owns the SGD
// row (it replaces the core one).
//
// Guarantees: an optimizer node has no outputs (it updates its inputs in place);
// its shape rule checks that grad and every state tensor have the parameter's
// shape, that lr is a float scalar and, for the Adam family, that step is an int64
// scalar, and names the node and the input on error. Cost: FLOPs per element of
// the update and the bytes read plus the bytes written back.
// MseLoss(scores [N, C] float, labels [N] int64) is a scalar: the sum ("sum", the
// default) or the mean ("mean", over the samples not ignored) of the per-sample
// mean over C of (scores - onehot(labels))^2; its gradient rule emits one B node,
// MseLossGrad(dloss, scores, labels) -> dscores, and no W node.
#include <optional>

#include "frontend/grad_util.h"
#include "frontend/op_families.h"
#include "frontend/rule_util.h"

namespace ravnest::fe {
namespace {

using rules::has_input;
using rules::in_dtype;
using rules::in_shape;
using rules::node_error;

// Where an optimizer op's inputs are: 0 is the parameter; `like_param` must have
// its shape (omitted optional ones are skipped); lr (and step) are scalars.
struct UpdateLayout {
  std::vector<size_t> like_param;
  size_t lr = 0;
  std::optional<size_t> step;  // int64 update count (Adam family)
  double flops_per_element = 0;
  std::vector<size_t> written;  // inputs written back besides the parameter
};

UpdateLayout sgd_layout() { return {{1, 2}, 3, std::nullopt, 5, {2}}; }
UpdateLayout adam_layout(double flops) { return {{1, 2, 3}, 5, size_t{4}, flops, {2, 3}}; }

Status check_scalar(const Node& node, const Graph& graph, size_t i, DType want, const char* what) {
  RN_ASSIGN_OR_RETURN(Shape s, in_shape(node, graph, i));
  RN_ASSIGN_OR_RETURN(DType d, in_dtype(node, graph, i));
  if (numel(s) != 1 || d != want)
    return node_error(node, what, " '", node.inputs[i], "' must be a ", dtype_name(want), " scalar, is ", dtype_name(d),
                      " ", shape_str(s));
  return ok_status();
}

ShapeFn shape_update(UpdateLayout layout) {
  return [layout](const Node& node, Graph& graph) -> Status {
    RN_ASSIGN_OR_RETURN(Shape param, in_shape(node, graph, 0));
    for (size_t i : layout.like_param) {
      if (!has_input(node, i)) continue;
      RN_ASSIGN_OR_RETURN(Shape other, in_shape(node, graph, i));
      if (other != param)
        return node_error(node, "input '", node.inputs[i], "' has shape ", shape_str(other), ", but the parameter '",
                          node.inputs[0], "' has ", shape_str(param));
    }
    RN_RETURN_IF_ERROR(check_scalar(node, graph, layout.lr, DType::kF32, "lr"));
    if (layout.step) RN_RETURN_IF_ERROR(check_scalar(node, graph, *layout.step, DType::kI64, "step"));
    if (!node.outputs.empty()) return node_error(node, "an optimizer update has no outputs (it updates in place)");
    return ok_status();
  };
}

CostFn cost_update(UpdateLayout layout) {
  return [layout](const Node& node, const Graph& graph) {
    OpCost c;
    const std::string& param = node.inputs.empty() ? std::string() : node.inputs[0];
    c.flops = layout.flops_per_element * rules::value_numel(graph, param);
    for (const std::string& v : node.inputs)
      if (!v.empty()) c.bytes += rules::value_bytes(graph, v);
    c.bytes += rules::value_bytes(graph, param);  // written back
    for (size_t i : layout.written)
      if (has_input(node, i)) c.bytes += rules::value_bytes(graph, node.inputs[i]);
    return c;
  };
}

OpDef update_row(const char* op, UpdateLayout layout) {
  return ravnest_op_row(op, shape_update(layout), cost_update(layout));
}

// ---- MseLoss ------------------------------------------------------------------

// Checks scores [N, C] (float) at input `scores_at`, labels [N] (int64) at the next
// input and the reduction attribute; returns the scores' shape and dtype.
Result<ValueInfo> check_mse_inputs(const Node& node, const Graph& graph, size_t scores_at) {
  RN_ASSIGN_OR_RETURN(Shape scores, in_shape(node, graph, scores_at));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, scores_at));
  RN_ASSIGN_OR_RETURN(Shape labels, in_shape(node, graph, scores_at + 1));
  RN_ASSIGN_OR_RETURN(DType label_type, in_dtype(node, graph, scores_at + 1));
  if (scores.size() != 2 || !rules::is_float(dtype))
    return node_error(node, "scores must be float [N, C] (flatten [B, T, V] to [B*T, V] first), got ",
                      dtype_name(dtype), " ", shape_str(scores));
  if (label_type != DType::kI64 || labels != Shape{scores[0]})
    return node_error(node, "labels must be int64 [", scores[0], "] (one class index per row of scores ",
                      shape_str(scores), "), got ", dtype_name(label_type), " ", shape_str(labels));
  const std::string reduction = node.attr_string("reduction", "sum");
  if (reduction != "sum" && reduction != "mean")
    return node_error(node, "reduction '", reduction, "' is not sum or mean");
  return ValueInfo::of("", dtype, scores);
}

Status shape_mse_loss(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(ValueInfo scores, check_mse_inputs(node, graph, 0));
  rules::set_out(graph, node, 0, scores.dtype, {});
  return ok_status();
}

// MseLossGrad(dloss scalar, scores [N, C], labels [N]) -> dscores [N, C].
Status shape_mse_loss_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dloss, in_shape(node, graph, 0));
  if (!dloss.empty()) return node_error(node, "dloss must be a scalar, got ", shape_str(dloss));
  RN_ASSIGN_OR_RETURN(ValueInfo scores, check_mse_inputs(node, graph, 1));
  rules::set_out(graph, node, 0, scores.dtype, scores.static_shape());
  return ok_status();
}

// Forward: subtract, square, add per score; backward: subtract, scale per score.
// Bytes: every input read and the output written.
CostFn cost_mse(double flops_per_score, double backward_per_score, size_t scores_at) {
  return [=](const Node& node, const Graph& graph) {
    OpCost c;
    const double scores = node.inputs.size() > scores_at ? rules::value_numel(graph, node.inputs[scores_at]) : 0;
    c.flops = flops_per_score * scores;
    c.backward_input_flops = backward_per_score * scores;
    for (const std::string& v : node.inputs)
      if (!v.empty()) c.bytes += rules::value_bytes(graph, v);
    for (const std::string& v : node.outputs)
      if (!v.empty()) c.bytes += rules::value_bytes(graph, v);
    return c;
  };
}

// d loss / d scores = dloss * 2 (s - onehot(label)) / C per counted row (one B
// node); labels take no gradient.
Status grad_mse_loss(const Node& node, GradBuilder& b) {
  if (!wants(b, node, 0)) return ok_status();
  const std::string& scores = input(node, 0);
  std::string ds = grad_value(b, scores);
  Node n = make_node(node.name + "/grad", "MseLossGrad", {b.grad(node.outputs[0]), scores, input(node, 1)}, {ds},
                     kRavnestDomain);
  n.attrs["reduction"] = node.attr_string("reduction", "sum");
  if (node.has_attr("ignore_index")) n.attrs["ignore_index"] = node.attr_int("ignore_index", -1);
  b.emit(std::move(n), scores);
  b.contribute(scores, ds);
  return ok_status();
}

}  // namespace

std::vector<OpDef> training_ops() {
  return {
      update_row("SGD", sgd_layout()),
      update_row("AdamW", adam_layout(12)),  // decay, two moments, bias-corrected step
      update_row("LAMB", adam_layout(18)),   // the moments, two norms, the update computed twice
      with_grad(ravnest_op_row("MseLoss", shape_mse_loss, cost_mse(3, 3, 0)), grad_mse_loss),
      ravnest_op_row("MseLossGrad", shape_mse_loss_grad, cost_mse(4, 0, 1)),
  };
}

}  // namespace ravnest::fe
