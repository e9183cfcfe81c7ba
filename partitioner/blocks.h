// LLM-aware splitting: finds a model's repeated blocks (transformer layers) and
// partitions it only at block boundaries.
//
// Guarantees:
//  * find_blocks(): every cut point is a position of the node order where exactly one
//    activation crosses (graph inputs and initializers are not activations: every stage
//    can read them), so the crossing value dominates the data flow (every path from the
//    inputs to the outputs passes through it). Segments are the node ranges between
//    consecutive cut points. When segments repeat (same op-type multiset, with a period
//    of one or more segments, at least twice), the block boundaries are the cut points
//    at the start of each repetition and at the end of the last one.
//  * partition_by_blocks(): cuts only at block boundaries (or, when the model has no
//    repeated blocks or too few of them for the stages, at single-tensor cut points), so
//    one tensor crosses each stage boundary; the prefix before the first block (the
//    embedding) is in the first stage and the suffix after the last block (final norm,
//    LM head, loss) in the last. The split is the exact DP over the chain of units.
//  * find_tied_parameters(): every parameter read by nodes of more than one stage, with
//    those stages (e.g. GPT-2's token embedding, read by the first Gather and the LM head
//    MatMul). Codegen must sum their gradients and keep the copies identical.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/graph.h"
#include "frontend/op_table.h"
#include "partitioner/dag_partition.h"

namespace ravnest::part {

// ---- model graph -> weighted DAG ----

struct ModelCostOptions {
  // Bytes per parameter byte held by its stage: weights + gradients + optimizer state
  // (Adam: m and v -> 4; SGD with momentum -> 3; plain SGD -> 2).
  double parameter_state_factor = 4;
  // Work of one node on a unit-speed machine; empty: F + B + W FLOPs from the op table.
  std::function<double(const Node&, const fe::OpCost&)> node_work;
};

// One DAG node per graph node (same index). Tensors: every value produced by a node and
// read by other nodes, bytes = size x 2 for float values
// (activation forward, gradient backward), x 1 otherwise. Memory: each parameter's bytes
// x parameter_state_factor, charged to its first reader. Activation: bytes of the
// node's float outputs (kept for the backward pass), per micro-batch. An op missing from
// the op table is an error naming the node.
Result<WeightedDag> dag_from_graph(const Graph& graph, const ModelCostOptions& options = {});

// ---- blocks ----

struct CutPoint {
  int position = 0;   // the cut lies before order[position]
  std::string value;  // the one activation crossing it
};

struct Segment {
  int begin = 0, end = 0;  // positions [begin, end) in `order`
  std::string signature;   // op-type multiset, e.g. "Add x2, MatMul x4, Softmax"
};

struct BlockStructure {
  std::vector<int> order;  // node indices: the graph order with constant-only nodes moved next to their reader
  std::vector<CutPoint> cuts;
  std::vector<Segment> segments;
  int period = 0;          // segments per block; 0: no repetition found
  int first_block = 0;     // index of the first block's first segment
  int num_blocks = 0;
  std::vector<int> boundaries;  // positions (into `order`) where a block starts or the last one ends
};

Result<BlockStructure> find_blocks(const Graph& graph);

struct TiedParameter {
  std::string name;
  std::vector<int> stages;           // ascending, at least two
  std::vector<std::string> readers;  // node names reading it
};

std::vector<TiedParameter> find_tied_parameters(const Graph& graph, const std::vector<int>& stage_of_node);

struct BlockPartition {
  DagPartition partition;  // stage_of_node indexed like graph.nodes
  BlockStructure blocks;
  std::vector<TiedParameter> tied;
};

Result<BlockPartition> partition_by_blocks(const Graph& graph, const Pipeline& pipeline,
                                           const ModelCostOptions& options = {});

// The graph with its nodes stably reordered by stage (still topological when the
// assignment is acyclic), and the stages in that order (non-decreasing), the form
// codegen's build_stage_programs takes.
Result<std::pair<Graph, std::vector<int>>> order_by_stage(const Graph& graph, const std::vector<int>& stage_of_node);

}  // namespace ravnest::part
