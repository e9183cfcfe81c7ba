// Autodiff: derives the backward pass of one stage subgraph, split into B work
// (gradients of activations, on the pipeline's critical path) and W work
// (gradients of parameters, which a zero-bubble schedule may delay).
//
// Guarantees of build_backward():
//  * every emitted node is tagged B or W; no B node reads a W node's output;
//  * the gradient of a parameter P is the value "grad/P" (W work), summed over
//    every use of P; the gradient of a stage input X that needs one is "grad/X"
//    (B work); seeds are the graph values "grad/<output>" for each seeded output;
//  * forward nodes may gain optional outputs the backward needs (MaxPool's
//    Indices, SoftmaxCrossEntropyLoss's log_prob) — the forward graph is updated;
//  * an op on the gradient path with no rule is an error naming node, op, opset.
#pragma once

#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/graph.h"

namespace ravnest::fe {

enum class Work { kB, kW };

struct BackwardGraph {
  std::vector<Node> nodes;           // in execution order
  std::vector<Work> work;            // parallel to nodes
  std::unordered_map<std::string, ValueInfo> values;  // values created by the backward
  std::map<std::string, TensorData> constants;        // small constants (shapes, axes)
  std::vector<std::string> param_grads;  // "grad/P", in parameter order
  std::vector<std::string> input_grads;  // "grad/X" for stage inputs that need them
};

std::string grad_name(const std::string& value);

struct BackwardRequest {
  std::vector<std::string> seeds;         // forward values whose gradients arrive from outside
  std::set<std::string> params;           // trainable parameters of this subgraph
  std::set<std::string> inputs_needing_grad;  // stage inputs whose gradients must be produced
};

// The builder a gradient rule talks to.
class GradBuilder {
 public:
  GradBuilder(Graph& forward, const BackwardRequest& request, BackwardGraph& out);

  const Graph& forward() const { return forward_; }
  const ValueInfo& info(const std::string& value) const;
  bool is_param(const std::string& value) const { return request_.params.count(value) != 0; }
  // Whether a gradient must flow into this forward value.
  bool needs_grad(const std::string& value) const { return needs_grad_.count(value) != 0; }
  // The gradient of forward value `value` (all contributions summed), or "" if none flows.
  std::string grad(const std::string& value);
  // Adds `grad_value` as one contribution to the gradient of forward value `target`.
  void contribute(const std::string& target, const std::string& grad_value);
  // A fresh value name "<hint>#k" with the given type, registered in the backward graph.
  std::string new_value(const std::string& hint, DType dtype, const Shape& shape);
  // A constant tensor available to the backward programs.
  std::string constant(const std::string& hint, TensorData data);
  // Emits a node computing towards the gradient of `target` (B if target is an
  // activation, W if it is a parameter).
  void emit(Node node, const std::string& target);
  // Ensures forward node `node_name` has output `index` (adding a named value
  // with the given type if it was omitted) and returns its name.
  std::string forward_output(const std::string& node_name, size_t index, DType dtype, const Shape& shape);
  // Emits nodes summing `grad_value` down to `target_shape` (numpy broadcasting
  // in reverse); returns the reduced value (grad_value itself if shapes match).
  std::string reduce_to_shape(const std::string& grad_value, const Shape& target_shape, const std::string& target);

  // Driver entry: runs the reverse sweep.
  Status run();

 private:
  Graph& forward_;
  const BackwardRequest& request_;
  BackwardGraph& out_;
  std::set<std::string> needs_grad_;
  std::unordered_map<std::string, std::vector<std::string>> contributions_;
  std::unordered_map<std::string, std::string> summed_;
  std::unordered_map<std::string, int> name_counts_;
};

// Derives the backward of `forward` (which it may amend as described above).
Result<BackwardGraph> build_backward(Graph& forward, const BackwardRequest& request);

}  // namespace ravnest::fe
