// Stage programs: cuts a model's training graph into pipeline stages and
// derives, per stage, the F, B, W and optimizer programs and what crosses each
// boundary.
//
// Guarantees: every forward node lands in exactly one stage; a stage reads
// only values produced by itself or by earlier stages (relayed through the
// stages between); the last stage holds the loss; F outputs everything B and W
// read from the forward (the stash); B outputs the gradients of the stage's
// float inputs that carry one, plus what W reads from B; W outputs "grad/P"
// for every parameter P; every program passes Graph::validate().
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/graph.h"
#include "runtime/bundle.h"

namespace ravnest::cg {

struct StageProgram {
  int stage = 0;
  Graph forward, backward, weight, optimizer;
  std::vector<rt::BoundaryTensor> recv, send;  // wire ids are global per boundary value
  std::string data_input, labels_input, loss_output, logits_output;
  std::string loss_reduction = "sum";  // ModelIo::loss_reduction
  std::vector<std::string> params, stash, wstash;
  std::vector<std::string> state;  // running state this stage's forward updates (Graph::state)
  std::vector<std::pair<std::string, TensorData>> weights;
  std::vector<std::string> nodes;  // forward node names, for reports
  double forward_flops = 0, backward_input_flops = 0, backward_weight_flops = 0;
  double forward_bytes = 0;  // bytes the forward kernels read and write
  int64_t send_bytes = 0;    // activation bytes sent to the next stage per micro-batch
};

// The model's interface to the trainer (see model_io in stages.cc).
struct ModelIo {
  std::string data, labels, loss, logits;
  bool loss_in_model = false;          // the model computes its loss (inputs: data, labels)
  std::string loss_reduction = "sum";  // "sum": Ravnest's appended loss; "mean": the model's own
};

struct StageOptions {
  std::string labels_name = "labels";
  std::string loss_name = "loss";
  // The loss appended to a model that ends in logits (`ravnestc compile --loss`):
  // "ce" (softmax cross-entropy) or "mse" (ai.ravnest.MseLoss against one-hot
  // labels); both summed over samples. A model with its own loss takes only "ce".
  std::string loss = "ce";
  rt::OptimizerConfig optimizer;
};

// The model's data, labels, loss and logits values; an error for any other form.
Result<ModelIo> model_io(const Graph& model, const StageOptions& options);

// `model`: forward graph with static shapes at the micro-batch size, one float
// input (the data) and one output (the logits, [N, classes]).
// `stage_of_node[i]`: stage of model.nodes[i]; non-decreasing.
Result<std::vector<StageProgram>> build_stage_programs(const Graph& model, const std::vector<int>& stage_of_node,
                                                       int num_stages, const StageOptions& options);

}  // namespace ravnest::cg
