#include "frontend/grad_util.h"

namespace ravnest::fe {

Node make_node(const std::string& name, const std::string& op, std::vector<std::string> inputs,
               std::vector<std::string> outputs, const std::string& domain) {
  Node n;
  n.name = name;
  n.op = op;
  n.domain = domain;
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  return n;
}

std::string grad_value(GradBuilder& b, const std::string& like) {
  const ValueInfo& vi = b.info(like);
  return b.new_value("d/" + like, vi.dtype, vi.static_shape());
}

const std::string& input(const Node& node, size_t i) {
  static const std::string kNone;
  return i < node.inputs.size() ? node.inputs[i] : kNone;
}

bool wants(GradBuilder& b, const Node& node, size_t i) {
  return !input(node, i).empty() && b.needs_grad(input(node, i));
}

}  // namespace ravnest::fe
