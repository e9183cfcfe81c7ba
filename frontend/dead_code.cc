// Pass remove_dead_nodes (see passes.h): after it every node contributes to a graph
// output (or has no outputs, i.e. acts by side effect), and initializers,
// parameters and value descriptions are exactly those still in use.
#include <set>

#include "frontend/passes.h"

namespace ravnest::fe {

void remove_dead_nodes(Graph& graph) {
  std::set<std::string> live(graph.outputs.begin(), graph.outputs.end());
  std::vector<bool> keep(graph.nodes.size(), false);
  for (size_t i = graph.nodes.size(); i-- > 0;) {
    const Node& node = graph.nodes[i];
    bool has_outputs = false, needed = false;
    for (const std::string& out : node.outputs) {
      if (out.empty()) continue;
      has_outputs = true;
      needed |= live.count(out) != 0;
    }
    if (has_outputs && !needed) continue;
    keep[i] = true;
    for (const std::string& in : node.inputs)
      if (!in.empty()) live.insert(in);
  }
  std::vector<Node> nodes;
  std::set<std::string> used(graph.inputs.begin(), graph.inputs.end());
  used.insert(graph.outputs.begin(), graph.outputs.end());
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    if (!keep[i]) continue;
    for (const std::string& name : graph.nodes[i].inputs) used.insert(name);
    for (const std::string& name : graph.nodes[i].outputs) used.insert(name);
    nodes.push_back(std::move(graph.nodes[i]));
  }
  graph.nodes = std::move(nodes);
  std::erase_if(graph.initializers, [&](const auto& entry) { return !used.count(entry.first); });
  std::erase_if(graph.parameters, [&](const std::string& name) { return !graph.initializers.count(name); });
  std::erase_if(graph.state, [&](const std::string& name) { return !graph.initializers.count(name); });
  std::erase_if(graph.values, [&](const auto& entry) { return !used.count(entry.first); });
}

}  // namespace ravnest::fe
