// The per-op rules that frontend/op_table.cc binds into OpDefs. Internal to the
// frontend: other folders reach them only through find_op()/all_ops().
//
//  * shape rules (shape_rules.cc): given static input types (and constant inputs
//    where the output shape depends on values), set every present output's type;
//    any inconsistency is an error naming the node and the shapes.
//  * cost rules (cost_rules.cc): FLOPs and bytes at the node's static shapes.
//  * fold rules (fold_rules.cc): the node's outputs computed at compile time.
#pragma once

#include <vector>

#include "common/graph.h"
#include "frontend/op_table.h"

namespace ravnest::fe::rules {

// ---- shape rules ----
Status shape_same(const Node& node, Graph& graph);  // output 0 = input 0 (Relu, Identity, Softmax)
Status shape_conv(const Node& node, Graph& graph);
Status shape_maxpool(const Node& node, Graph& graph);
Status shape_flatten(const Node& node, Graph& graph);
Status shape_reshape(const Node& node, Graph& graph);
Status shape_gemm(const Node& node, Graph& graph);
Status shape_matmul(const Node& node, Graph& graph);
Status shape_broadcast(const Node& node, Graph& graph);  // Add, Sub, Mul, Div, Sum
Status shape_transpose(const Node& node, Graph& graph);
Status shape_reduce_sum(const Node& node, Graph& graph);
Status shape_softmax_ce_loss(const Node& node, Graph& graph);
Status shape_constant(const Node& node, Graph& graph);
Status shape_shape(const Node& node, Graph& graph);
Status shape_gather(const Node& node, Graph& graph);
Status shape_unsqueeze(const Node& node, Graph& graph);
Status shape_squeeze(const Node& node, Graph& graph);
Status shape_concat(const Node& node, Graph& graph);
Status shape_cast(const Node& node, Graph& graph);
Status shape_slice(const Node& node, Graph& graph);
Status shape_constant_of_shape(const Node& node, Graph& graph);
Status shape_range(const Node& node, Graph& graph);
// ai.ravnest gradient and optimizer ops (docs/training-ops.md).
Status shape_conv_grad_input(const Node& node, Graph& graph);
Status shape_conv_grad_weight(const Node& node, Graph& graph);
Status shape_relu_grad(const Node& node, Graph& graph);
Status shape_maxpool_grad(const Node& node, Graph& graph);
Status shape_softmax_ce_loss_grad(const Node& node, Graph& graph);

// ---- cost rules ----
// Elementwise: `per_element` FLOPs per output element, B work = forward, no W work.
CostFn cost_eltwise(double per_element, bool differentiable = true);
OpCost cost_data_movement(const Node& node, const Graph& graph);  // 0 FLOPs, bytes in + out
OpCost cost_conv(const Node& node, const Graph& graph);
OpCost cost_maxpool(const Node& node, const Graph& graph);
OpCost cost_gemm(const Node& node, const Graph& graph);
OpCost cost_matmul(const Node& node, const Graph& graph);
OpCost cost_reduce(const Node& node, const Graph& graph);  // ReduceSum and Sum: one add per input element
OpCost cost_softmax_ce_loss(const Node& node, const Graph& graph);
OpCost cost_conv_grad_input(const Node& node, const Graph& graph);
OpCost cost_conv_grad_weight(const Node& node, const Graph& graph);
OpCost cost_maxpool_grad(const Node& node, const Graph& graph);

// ---- fold rules ----
Result<std::vector<TensorData>> fold_copy(const Node& node, const Graph& graph);  // Identity, Reshape, (Un)Squeeze
Result<std::vector<TensorData>> fold_constant(const Node& node, const Graph& graph);
Result<std::vector<TensorData>> fold_shape(const Node& node, const Graph& graph);
Result<std::vector<TensorData>> fold_gather(const Node& node, const Graph& graph);
Result<std::vector<TensorData>> fold_concat(const Node& node, const Graph& graph);
Result<std::vector<TensorData>> fold_cast(const Node& node, const Graph& graph);
Result<std::vector<TensorData>> fold_slice(const Node& node, const Graph& graph);
Result<std::vector<TensorData>> fold_constant_of_shape(const Node& node, const Graph& graph);
Result<std::vector<TensorData>> fold_range(const Node& node, const Graph& graph);
Result<std::vector<TensorData>> fold_binary(const Node& node, const Graph& graph);  // Add, Sub, Mul, Div

}  // namespace ravnest::fe::rules
