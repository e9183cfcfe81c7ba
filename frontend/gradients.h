// Gradient rules, one function per op, referenced by the op table
// (frontend/op_table.cc). Each rule emits B nodes for inputs that need a
// gradient and W nodes for parameters, through the GradBuilder.
#pragma once

#include "frontend/autodiff.h"

namespace ravnest::fe {

Status grad_conv(const Node& node, GradBuilder& b);
Status grad_relu(const Node& node, GradBuilder& b);
Status grad_maxpool(const Node& node, GradBuilder& b);
Status grad_reshape(const Node& node, GradBuilder& b);  // Reshape and Flatten
Status grad_identity(const Node& node, GradBuilder& b);
Status grad_gemm(const Node& node, GradBuilder& b);
Status grad_matmul(const Node& node, GradBuilder& b);
Status grad_add(const Node& node, GradBuilder& b);
Status grad_sub(const Node& node, GradBuilder& b);
Status grad_softmax_cross_entropy(const Node& node, GradBuilder& b);

}  // namespace ravnest::fe
