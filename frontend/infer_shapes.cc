// Pass infer_shapes: runs each node's shape rule in topological order, so that
// after it every node output has a static type consistent with its inputs. The
// first failure is returned with the node named; the graph is then partly typed.
#include "frontend/op_table.h"
#include "frontend/passes.h"

namespace ravnest::fe {

Status infer_shapes(Graph& graph) {
  for (const Node& node : graph.nodes) {
    RN_RETURN_IF_ERROR(check_op(node, graph.opset));
    const OpDef* def = find_op(node.domain, node.op, static_cast<int>(graph.opset));
    RN_RETURN_IF_ERROR(def->shape(node, graph));
  }
  return ok_status();
}

}  // namespace ravnest::fe
