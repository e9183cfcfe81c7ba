// Op family "training": the ai.ravnest optimizer ops SGD, AdamW and LAMB
// (docs/training-ops.md, "Optimizers"). This family owns the SGD row (it replaces
// the core one).
//
// Guarantees: an optimizer node has no outputs (it updates its inputs in place);
// its shape rule checks that grad and every state tensor have the parameter's
// shape, that lr is a float scalar and, for the Adam family, that step is an int64
// scalar, and names the node and the input on error. Cost: FLOPs per element of
// the update and the bytes read plus the bytes written back.
#include <optional>

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

}  // namespace

std::vector<OpDef> training_ops() {
  return {
      update_row("SGD", sgd_layout()),
      update_row("AdamW", adam_layout(12)),  // decay, two moments, bias-corrected step
      update_row("LAMB", adam_layout(18)),   // the moments, two norms, the update computed twice
  };
}

}  // namespace ravnest::fe
