// mark_state (see passes.h): initializers an op updates in place become state.
#include <algorithm>
#include <map>

#include "frontend/op_table.h"
#include "frontend/passes.h"
#include "frontend/rule_util.h"

namespace ravnest::fe {

Status mark_state(Graph& graph) {
  std::map<std::string, const Node*> state_reader, other_reader;
  for (const Node& node : graph.nodes) {
    const OpDef* def = find_op(node.domain, node.op, static_cast<int>(graph.opset));
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const std::string& v = node.inputs[i];
      if (v.empty() || !graph.is_initializer(v)) continue;
      bool is_state = def && std::find(def->state_inputs.begin(), def->state_inputs.end(), i) != def->state_inputs.end();
      (is_state ? state_reader : other_reader).emplace(v, &node);
    }
  }
  for (const auto& [v, node] : state_reader) {
    if (auto it = other_reader.find(v); it != other_reader.end())
      return error(Code::kUnsupported, "initializer '", v, "' is running state of ", node->describe(),
                   " and also an input of ", it->second->describe(), "; give each its own initializer");
    if (!rules::is_float(graph.initializers.at(v).dtype))
      return error(Code::kInvalidArgument, node->describe(), ": state input '", v, "' must be a float tensor");
    graph.parameters.erase(v);
    graph.state.insert(v);
  }
  return ok_status();
}

}  // namespace ravnest::fe
