// The op table: the single source of truth for every op the compiler accepts.
//
// For each op: the opset range it is supported in, its shape rule, its cost rule
// and its gradient rule. An op absent from the table is a compile error naming the
// node, the op type and the opset. Kernels live in the runtime and are matched by
// (domain, op) name; tests/runtime checks that every op here has one.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/graph.h"

namespace ravnest::fe {

// Per-node cost at the graph's (static) shapes, for one forward pass.
struct OpCost {
  double flops = 0;          // forward multiply-adds count as 2
  double backward_input_flops = 0;   // B work
  double backward_weight_flops = 0;  // W work
  double bytes = 0;          // bytes read + written by the forward kernel
};

// Shape rule: fills `graph.values` for the node's outputs from its inputs'
// types (and constant inputs, available through graph.initializers).
using ShapeFn = std::function<Status(const Node& node, Graph& graph)>;
using CostFn = std::function<OpCost(const Node& node, const Graph& graph)>;

// Fold rule: computes the node's outputs at compile time. Called by fold_constants
// only after the node's shape rule ran (output types are in graph.values) and when
// every input is a constant initializer (or, for `fold_from_shapes` ops, has a static
// shape). Returns one tensor per output slot ("" outputs get an empty TensorData).
using FoldFn = std::function<Result<std::vector<TensorData>>(const Node& node, const Graph& graph)>;

class GradBuilder;  // frontend/autodiff.h
// Gradient rule: given the node and the gradients of its outputs (in the
// builder), emits B nodes (gradients of inputs that need them) and W nodes
// (gradients of parameters).
using GradFn = std::function<Status(const Node& node, GradBuilder& builder)>;

struct OpDef {
  std::string op;
  std::string domain;  // "" = ONNX default domain
  int min_opset = 1;
  int max_opset = 1000;
  ShapeFn shape;
  CostFn cost;
  GradFn grad;  // empty: not differentiable (an error if a gradient must flow through it)
  bool foldable = false;  // evaluated at compile time when all inputs are constant
  FoldFn fold;            // set exactly when foldable
  bool fold_from_shapes = false;  // folds from its inputs' static shapes alone (Shape)
  // Inputs the op's kernel updates in place while training (not trained by the
  // optimizer): BatchNormalization's running mean and variance. See Graph::state.
  std::vector<size_t> state_inputs;
};

// Opsets of the default domain Ravnest accepts in model files.
inline constexpr int kMinOpset = 13;
inline constexpr int kMaxOpset = 18;

const OpDef* find_op(const std::string& domain, const std::string& op, int opset);
// Every op in the table (for docs and coverage tests).
const std::vector<OpDef>& all_ops();
// OK if `node` is in the table at `opset`; otherwise kUnsupported naming the node,
// op, domain and opset, and listing the supported ops.
Status check_op(const Node& node, int64_t opset);

}  // namespace ravnest::fe
