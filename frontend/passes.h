// Graph-to-graph passes of the frontend, each in its own file. import_model runs
// them in this order: fold_constants, infer_shapes, remove_dead_nodes, mark_state.
#pragma once

#include "common/graph.h"

namespace ravnest::fe {

// (infer_shapes.cc) Runs every node's shape rule in topological order. Afterwards
// every node output has a static type, or the error names the first node whose
// rule failed (unsupported op, symbolic input, inconsistent shapes).
Status infer_shapes(Graph& graph);

// (fold.cc) Walks the nodes in order, typing each with its shape rule; every
// foldable node whose inputs are all constants (initializers that are not in
// graph.parameters, including earlier folded values) — or, for Shape, whose input
// has a static shape — is evaluated and replaced by initializers for its outputs.
// Parameters are never read as constants, so they are never folded away.
Status fold_constants(Graph& graph);

// (dead_code.cc) Removes nodes none of whose outputs reach a graph output (nodes
// without outputs, such as SGD, are kept), then initializers, parameters and value
// descriptions no remaining node or graph output uses. Graph inputs are kept.
void remove_dead_nodes(Graph& graph);

// (state.cc) Moves the initializers read at an op's state_inputs (op table) from
// graph.parameters to graph.state. An initializer read both as state and as an
// ordinary input of another node is an error naming both nodes.
Status mark_state(Graph& graph);

}  // namespace ravnest::fe
