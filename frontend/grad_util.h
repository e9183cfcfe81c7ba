// Small helpers shared by the gradient rules (frontend/gradients.cc and the op
// families under frontend/ops/). Internal to the frontend.
#pragma once

#include <string>
#include <vector>

#include "frontend/autodiff.h"

namespace ravnest::fe {

Node make_node(const std::string& name, const std::string& op, std::vector<std::string> inputs,
               std::vector<std::string> outputs, const std::string& domain = "");
// A new value shaped like forward value `like`, named after the gradient it holds.
std::string grad_value(GradBuilder& b, const std::string& like);
// Input i of the node, or "" when omitted.
const std::string& input(const Node& node, size_t i);
// True when input i is present and a gradient must flow into it.
bool wants(GradBuilder& b, const Node& node, size_t i);

}  // namespace ravnest::fe
