// Pass fold_constants (see passes.h): after it, no foldable node has only constant
// inputs, each folded value is an initializer with the type its shape rule gave,
// every remaining node has been typed by its shape rule, and parameters are
// untouched. In particular PyTorch's Shape -> Gather -> Unsqueeze -> Concat chain
// in front of a Reshape becomes one constant shape initializer.
#include <set>

#include "common/log.h"
#include "frontend/op_table.h"
#include "frontend/passes.h"

namespace ravnest::fe {
namespace {

bool inputs_ready(const OpDef& def, const Node& node, const Graph& graph, const std::set<std::string>& constants) {
  for (const std::string& in : node.inputs) {
    if (in.empty()) continue;
    if (def.fold_from_shapes) {
      const ValueInfo* info = graph.find_value(in);
      if (!info || !info->is_static()) return false;
    } else if (!constants.count(in)) {
      return false;
    }
  }
  return true;
}

}  // namespace

Status fold_constants(Graph& graph) {
  std::set<std::string> constants;
  for (const auto& [name, tensor] : graph.initializers)
    if (!graph.parameters.count(name)) constants.insert(name);

  std::vector<Node> kept;
  kept.reserve(graph.nodes.size());
  for (Node& node : graph.nodes) {
    RN_RETURN_IF_ERROR(check_op(node, graph.opset));
    const OpDef* def = find_op(node.domain, node.op, static_cast<int>(graph.opset));
    RN_RETURN_IF_ERROR(def->shape(node, graph));
    if (!def->foldable || !inputs_ready(*def, node, graph, constants)) {
      kept.push_back(std::move(node));
      continue;
    }
    RN_ASSIGN_OR_RETURN(std::vector<TensorData> outputs, def->fold(node, graph));
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      const std::string& out = node.outputs[i];
      if (out.empty()) continue;
      const ValueInfo* info = graph.find_value(out);
      if (i >= outputs.size() || !info || outputs[i].dtype != info->dtype || outputs[i].shape != info->static_shape() ||
          outputs[i].bytes.size() != static_cast<size_t>(outputs[i].numel()) * dtype_size(outputs[i].dtype))
        return error(Code::kInternal, "folding ", node.describe(), " gave output ", i,
                     " a type that differs from its shape rule's (a bug in the op table)");
      graph.initializers[out] = std::move(outputs[i]);
      constants.insert(out);
    }
    RN_VERBOSE("fold: ", node.describe(), " evaluated at compile time");
  }
  graph.nodes = std::move(kept);
  return ok_status();
}

}  // namespace ravnest::fe
