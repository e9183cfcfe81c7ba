#include "codegen/stages.h"

#include <algorithm>
#include <set>

#include "frontend/autodiff.h"
#include "frontend/op_table.h"

namespace ravnest::cg {
namespace {

bool is_float(DType d) { return d == DType::kF32 || d == DType::kF64 || d == DType::kF16 || d == DType::kBF16; }

// Copies the type of every value the nodes touch (plus `extra`) from `sources`.
Status fill_values(Graph& g, const std::vector<const std::unordered_map<std::string, ValueInfo>*>& sources) {
  std::set<std::string> names(g.inputs.begin(), g.inputs.end());
  names.insert(g.outputs.begin(), g.outputs.end());
  for (const Node& n : g.nodes) {
    for (const auto& v : n.inputs) if (!v.empty()) names.insert(v);
    for (const auto& v : n.outputs) if (!v.empty()) names.insert(v);
  }
  for (const auto& name : names) {
    bool found = false;
    for (const auto* src : sources) {
      auto it = src->find(name);
      if (it != src->end()) {
        if (!it->second.is_static())
          return error(Code::kInvalidArgument, "value '", name, "' has no static shape (", it->second.shape_string(),
                       "); fix the input shapes with --batch or --shape");
        g.set_value(it->second);
        found = true;
        break;
      }
    }
    if (!found) return error(Code::kInternal, "program '", g.name, "': no type for value '", name, "'");
  }
  return ok_status();
}

// Values read by `nodes` and produced by none of them, in first-use order.
std::vector<std::string> external_reads(const std::vector<Node>& nodes) {
  std::set<std::string> produced;
  std::set<std::string> seen;
  std::vector<std::string> out;
  for (const Node& n : nodes) {
    for (const auto& v : n.inputs)
      if (!v.empty() && !produced.count(v) && seen.insert(v).second) out.push_back(v);
    for (const auto& v : n.outputs)
      if (!v.empty()) produced.insert(v);
  }
  return out;
}

std::set<std::string> produced_by(const std::vector<Node>& nodes) {
  std::set<std::string> out;
  for (const Node& n : nodes)
    for (const auto& v : n.outputs)
      if (!v.empty()) out.insert(v);
  return out;
}

void add_unique(std::vector<std::string>& list, const std::string& v) {
  if (std::find(list.begin(), list.end(), v) == list.end()) list.push_back(v);
}

// The optimizer program's update of parameter `param`: inputs param, grad/<param>,
// then its state (docs/training-ops.md): velocity/<param> for SGD; exp_avg/<param>,
// exp_avg_sq/<param> and step/<param> (int64 scalar) for AdamW and LAMB; then lr.
void add_update(Graph& opt, const ValueInfo& param, const rt::OptimizerConfig& config) {
  const std::string& p = param.name;
  auto add_input = [&](const std::string& name, DType dtype, const Shape& shape) {
    opt.inputs.push_back(name);
    opt.set_value(ValueInfo::of(name, dtype, shape));
    return name;
  };
  Node step;
  step.domain = kRavnestDomain;
  const Shape shape = param.static_shape();
  step.inputs = {add_input(p, param.dtype, shape), add_input(fe::grad_name(p), param.dtype, shape)};
  step.attrs["weight_decay"] = static_cast<float>(config.weight_decay);
  if (config.type == "sgd") {
    step.op = "SGD";
    step.inputs.push_back(add_input("velocity/" + p, param.dtype, shape));
    step.attrs["momentum"] = static_cast<float>(config.momentum);
    step.attrs["nesterov"] = int64_t{config.nesterov ? 1 : 0};
  } else {
    step.op = config.type == "lamb" ? "LAMB" : "AdamW";
    for (const char* slot : {"exp_avg/", "exp_avg_sq/"}) step.inputs.push_back(add_input(slot + p, param.dtype, shape));
    step.inputs.push_back(add_input("step/" + p, DType::kI64, {}));
    step.attrs["beta1"] = static_cast<float>(config.beta1);
    step.attrs["beta2"] = static_cast<float>(config.beta2);
    step.attrs["epsilon"] = static_cast<float>(config.eps);
  }
  step.inputs.push_back("lr");
  step.name = (config.type == "sgd" ? "sgd/" : config.type + "/") + p;
  opt.nodes.push_back(std::move(step));
}

}  // namespace

// What the trainer feeds and reads, in either of the two forms a model may take:
//  * logits only: one data input, one output [B, C] or [B, T, V]; Ravnest
//    appends a summed loss over `options.labels_name` (options.loss: a softmax
//    cross-entropy, or the mean squared error against one-hot labels);
//  * with its loss: inputs (data, labels), outputs (loss scalar, logits), the
//    loss computed by the model itself (a mean, as PyTorch's losses are); only
//    options.loss "ce" (the default) is accepted, since nothing is appended.
Result<ModelIo> model_io(const Graph& model, const StageOptions& options) {
  ModelIo io;
  if (options.loss != "ce" && options.loss != "mse")
    return error(Code::kInvalidArgument, "loss '", options.loss, "' is not ce (softmax cross-entropy) or mse (mean ",
                 "squared error)");
  const bool with_loss = model.inputs.size() == 2 && model.outputs.size() == 2;
  if (with_loss && options.loss != "ce")
    return error(Code::kInvalidArgument, "--loss ", options.loss, " appends a loss to a model that ends in logits, ",
                 "but this model computes its own loss (inputs '", model.inputs[0], "', '", model.inputs[1],
                 "'; outputs '", model.outputs[0], "', '", model.outputs[1], "'): drop --loss ", options.loss,
                 " to train with the model's loss, or export the model without it ((data) -> (logits))");
  if (!with_loss && (model.inputs.size() != 1 || model.outputs.size() != 1))
    return error(Code::kUnsupported, "the model has ", model.inputs.size(), " inputs and ", model.outputs.size(),
                 " outputs; Ravnest trains either (data) -> (logits), appending a cross-entropy, or (data, labels) -> "
                 "(loss, logits) with the loss in the model");
  io.data = model.inputs[0];
  io.logits = model.outputs.back();
  const ValueInfo* logits_info = model.find_value(io.logits);
  if (!logits_info || !logits_info->is_static() || logits_info->dims.size() < 2 || logits_info->dims.size() > 3)
    return error(Code::kUnsupported, "model output '", io.logits, "' must be logits [batch, classes] or, for a ",
                 "language model, [batch, positions, vocabulary]; got ",
                 logits_info ? logits_info->shape_string() : "?");
  if (!with_loss) {
    io.labels = options.labels_name;
    io.loss = options.loss_name;
    return io;
  }
  io.labels = model.inputs[1];
  io.loss = model.outputs[0];
  io.loss_in_model = true;
  io.loss_reduction = "mean";
  const ValueInfo* labels = model.find_value(io.labels);
  const ValueInfo* loss = model.find_value(io.loss);
  if (!labels || labels->dtype != DType::kI64)
    return error(Code::kUnsupported, "the model's second input '", io.labels, "' must be int64 labels");
  if (!loss || !loss->is_static() || !loss->dims.empty() || loss->dtype != DType::kF32)
    return error(Code::kUnsupported, "the model's first output '", io.loss, "' must be the scalar float loss, got ",
                 loss ? loss->shape_string() : "?");
  for (const Node& n : model.nodes)
    if (std::find(n.outputs.begin(), n.outputs.end(), io.loss) != n.outputs.end() &&
        n.attr_string("reduction", "mean") != "mean")
      return error(Code::kUnsupported, n.describe(), ": the model's loss must be a mean (reduction 'mean'); got '",
                   n.attr_string("reduction", "mean"), "'");
  return io;
}

Result<std::vector<StageProgram>> build_stage_programs(const Graph& model, const std::vector<int>& stage_of_node,
                                                       int num_stages, const StageOptions& options) {
  const int K = num_stages;
  if (stage_of_node.size() != model.nodes.size())
    return error(Code::kInternal, "stage assignment covers ", stage_of_node.size(), " of ", model.nodes.size(), " nodes");
  for (size_t i = 1; i < stage_of_node.size(); ++i)
    if (stage_of_node[i] < stage_of_node[i - 1] || stage_of_node[i] >= K)
      return error(Code::kInternal, "stage assignment is not contiguous at node ", model.nodes[i].name);
  RN_ASSIGN_OR_RETURN(ModelIo io, model_io(model, options));
  const std::string& data = io.data;
  const std::string& logits = io.logits;
  const std::string& labels_name = io.labels;
  const std::string& loss_name = io.loss;
  Graph train = model;
  if (!io.loss_in_model) {
    // The training forward: the model plus labels and a summed loss, a softmax
    // cross-entropy or (options.loss "mse") ai.ravnest.MseLoss (the trainer
    // scales its gradient by 1/batch). A language model's logits [B, T, V] and
    // labels [B, T] are flattened to B*T rows, and label -1 marks positions
    // without a target (ignored).
    const ValueInfo* logits_info = model.find_value(logits);
    const Shape logits_shape = logits_info->static_shape();
    const int64_t micro = logits_shape[0];
    const bool sequence = logits_shape.size() == 3;
    const Shape labels_shape = sequence ? Shape{micro, logits_shape[1]} : Shape{micro};
    train.set_value(ValueInfo::of(labels_name, DType::kI64, labels_shape));
    train.set_value(ValueInfo::of(loss_name, logits_info->dtype, {}));
    std::string scores = logits, targets = labels_name;
    if (sequence) {
      const int64_t rows = micro * logits_shape[1];
      auto flatten = [&](const std::string& value, const Shape& to, DType dtype) {
        std::string shape_name = "loss/shape/" + value, out = "loss/flat/" + value;
        train.initializers[shape_name] = TensorData::from_ints(to, {static_cast<int64_t>(to.size())});
        train.set_value(ValueInfo::of(shape_name, DType::kI64, {static_cast<int64_t>(to.size())}));
        train.set_value(ValueInfo::of(out, dtype, to));
        Node reshape;
        reshape.name = "loss/flatten/" + value;
        reshape.op = "Reshape";
        reshape.inputs = {value, shape_name};
        reshape.outputs = {out};
        train.nodes.push_back(reshape);
        return out;
      };
      scores = flatten(logits, {rows, logits_shape[2]}, logits_info->dtype);
      targets = flatten(labels_name, {rows}, DType::kI64);
    }
    Node loss;
    loss.name = "loss";
    loss.op = options.loss == "mse" ? "MseLoss" : "SoftmaxCrossEntropyLoss";
    if (options.loss == "mse") loss.domain = kRavnestDomain;
    loss.inputs = {scores, targets};
    loss.outputs = {loss_name};
    loss.attrs["reduction"] = std::string("sum");
    if (sequence) loss.attrs["ignore_index"] = int64_t{-1};
    train.nodes.push_back(loss);
  }
  std::vector<int> stage_of = stage_of_node;
  stage_of.resize(train.nodes.size(), K - 1);  // an appended loss (and its flattening) on the last stage

  // Stage that produces each value (data: stage 0, labels: the last stage).
  std::map<std::string, int> producer_stage{{data, 0}, {labels_name, K - 1}};
  std::map<std::string, int> last_use;
  for (size_t i = 0; i < train.nodes.size(); ++i) {
    for (const auto& v : train.nodes[i].outputs)
      if (!v.empty()) producer_stage[v] = stage_of[i];
    for (const auto& v : train.nodes[i].inputs)
      if (!v.empty() && !train.is_initializer(v)) last_use[v] = std::max(last_use[v], stage_of[i]);
  }
  last_use[logits] = K - 1;
  // Crossing after stage s: produced at or before s, used after s. Ordered by production.
  std::vector<std::string> order{data};
  for (const Node& n : train.nodes)
    for (const auto& v : n.outputs)
      if (!v.empty()) order.push_back(v);
  std::map<std::string, uint32_t> wire_id;
  for (const auto& v : order) wire_id.emplace(v, static_cast<uint32_t>(wire_id.size()));
  auto crossing = [&](int s) {
    std::vector<std::string> out;
    for (const auto& v : order)
      if (producer_stage.count(v) && producer_stage[v] <= s && last_use.count(v) && last_use[v] > s) out.push_back(v);
    return out;
  };

  std::vector<StageProgram> stages(K);
  // Gradients received by stage s (names in stage s+1's recv that carry one).
  std::set<std::string> grads_from_next;
  for (int s = K - 1; s >= 0; --s) {
    StageProgram& sp = stages[s];
    sp.stage = s;
    std::vector<std::string> recv = s > 0 ? crossing(s - 1) : std::vector<std::string>{};
    std::vector<std::string> send = s + 1 < K ? crossing(s) : std::vector<std::string>{};

    Graph fwd;
    fwd.name = "stage" + std::to_string(s) + ".forward";
    fwd.opset = train.opset;
    for (size_t i = 0; i < train.nodes.size(); ++i)
      if (stage_of[i] == s) {
        fwd.nodes.push_back(train.nodes[i]);
        if (train.nodes[i].name != "loss") sp.nodes.push_back(train.nodes[i].name);
      }
    if (s == 0) {
      fwd.inputs.push_back(data);
      sp.data_input = data;
    }
    for (const auto& v : recv) fwd.inputs.push_back(v);
    if (s == K - 1) {
      fwd.inputs.push_back(labels_name);
      sp.labels_input = labels_name;
      sp.loss_output = loss_name;
      sp.loss_reduction = io.loss_reduction;
      sp.logits_output = logits;
    }
    // A value that only passes through this stage is copied by a relay node,
    // so that every program output is produced by a node of the program.
    std::set<std::string> inputs_set(fwd.inputs.begin(), fwd.inputs.end());
    std::vector<std::string> outputs = send;
    if (s == K - 1) outputs = {loss_name, logits};
    for (auto& out : outputs) {
      if (!inputs_set.count(out)) continue;
      std::string relay = "relay/" + out;
      Node id;
      id.name = relay;
      id.op = "Identity";
      id.inputs = {out};
      id.outputs = {relay};
      fwd.nodes.push_back(id);
      train.set_value([&] { ValueInfo vi = *train.find_value(out); vi.name = relay; return vi; }());
      if (out == logits) sp.logits_output = relay;
      out = relay;
    }
    fwd.outputs = outputs;
    // Parameters and constants this stage reads.
    for (const auto& v : external_reads(fwd.nodes)) {
      if (!train.is_initializer(v)) continue;
      if (train.parameters.count(v)) {
        fwd.inputs.push_back(v);
        sp.params.push_back(v);
        sp.weights.emplace_back(v, train.initializers.at(v));
        fwd.parameters.insert(v);
      } else if (train.state.count(v)) {
        fwd.inputs.push_back(v);
        sp.state.push_back(v);
        fwd.state.insert(v);
      } else {
        fwd.initializers[v] = train.initializers.at(v);
      }
    }
    for (const auto& v : sp.state) sp.weights.emplace_back(v, train.initializers.at(v));
    RN_RETURN_IF_ERROR(fill_values(fwd, {&train.values}));

    // Autodiff of this stage.
    fe::BackwardRequest request;
    if (s == K - 1) {
      request.seeds = {loss_name};
    } else {
      for (size_t i = 0; i < send.size(); ++i)
        if (grads_from_next.count(send[i])) request.seeds.push_back(outputs[i]);
    }
    request.params.insert(sp.params.begin(), sp.params.end());
    for (const auto& v : recv)
      if (is_float(fwd.find_value(v)->dtype)) request.inputs_needing_grad.insert(v);
    auto backward = fe::build_backward(fwd, request);
    if (!backward.ok()) return backward.status().with_context("stage " + std::to_string(s));
    fe::BackwardGraph& bg = *backward;
    for (const auto& p : sp.params)
      if (std::find(bg.param_grads.begin(), bg.param_grads.end(), fe::grad_name(p)) == bg.param_grads.end())
        return error(Code::kInvalidArgument, "parameter '", p, "' does not affect the loss; remove it from the model");

    grads_from_next.clear();
    for (const auto& v : recv)
      if (std::find(bg.input_grads.begin(), bg.input_grads.end(), fe::grad_name(v)) != bg.input_grads.end())
        grads_from_next.insert(v);

    // Split the backward into B and W programs.
    std::vector<Node> b_nodes, w_nodes;
    for (size_t i = 0; i < bg.nodes.size(); ++i) (bg.work[i] == fe::Work::kB ? b_nodes : w_nodes).push_back(bg.nodes[i]);
    std::set<std::string> fwd_values;
    for (const auto& in : fwd.inputs) fwd_values.insert(in);
    for (const auto& v : produced_by(fwd.nodes)) fwd_values.insert(v);
    std::set<std::string> b_made = produced_by(b_nodes);

    auto make_program = [&](const std::string& role, const std::vector<Node>& nodes, Graph* g) {
      g->name = "stage" + std::to_string(s) + "." + role;
      g->opset = train.opset;
      g->nodes = nodes;
      for (const auto& v : external_reads(nodes)) {
        if (bg.constants.count(v)) g->initializers[v] = bg.constants.at(v);
        else if (fwd.initializers.count(v)) g->initializers[v] = fwd.initializers.at(v);
        else g->inputs.push_back(v);
      }
    };
    make_program("backward", b_nodes, &stages[s].backward);
    make_program("weight", w_nodes, &stages[s].weight);
    Graph& bprog = stages[s].backward;
    Graph& wprog = stages[s].weight;
    for (const auto& g : bg.input_grads) add_unique(bprog.outputs, g);
    for (const auto& v : wprog.inputs) {
      if (b_made.count(v)) add_unique(bprog.outputs, v);
      if (b_made.count(v) || v.rfind("seed/", 0) == 0) add_unique(sp.wstash, v);
    }
    wprog.outputs = bg.param_grads;
    for (const Graph* g : {&bprog, &wprog})
      for (const auto& v : g->inputs)
        if (fwd_values.count(v) && !train.parameters.count(v)) add_unique(sp.stash, v);
    for (const auto& v : sp.stash)
      if (!inputs_set.count(v)) add_unique(fwd.outputs, v);

    RN_RETURN_IF_ERROR(fill_values(fwd, {&fwd.values}));
    RN_RETURN_IF_ERROR(fill_values(bprog, {&fwd.values, &bg.values}));
    RN_RETURN_IF_ERROR(fill_values(wprog, {&fwd.values, &bg.values}));

    // Optimizer: one in-place update per parameter, its state as program inputs.
    Graph& opt = sp.optimizer;
    opt.name = "stage" + std::to_string(s) + ".optimizer";
    opt.opset = train.opset;
    opt.inputs.push_back("lr");
    opt.set_value(ValueInfo::of("lr", DType::kF32, {}));
    for (const auto& p : sp.params) add_update(opt, *fwd.find_value(p), options.optimizer);

    // Boundary descriptions with global wire ids (a relay keeps its source's id).
    auto describe = [&](const std::string& local, const std::string& source) {
      rt::BoundaryTensor t;
      t.name = local;
      t.wire_id = wire_id.at(source);
      const ValueInfo* vi = fwd.find_value(local);
      t.dtype = vi->dtype;
      t.shape = vi->static_shape();
      return t;
    };
    for (const auto& v : recv) sp.recv.push_back(describe(v, v));
    for (size_t i = 0; i < send.size(); ++i) {
      sp.send.push_back(describe(outputs[i], send[i]));
      sp.send_bytes += numel(sp.send.back().shape) * static_cast<int64_t>(dtype_size(sp.send.back().dtype));
    }

    for (size_t i = 0; i < fwd.nodes.size(); ++i) {
      const Node& n = fwd.nodes[i];
      const fe::OpDef* def = fe::find_op(n.domain, n.op, static_cast<int>(fwd.opset));
      if (!def || !def->cost) continue;
      fe::OpCost c = def->cost(n, fwd);
      sp.forward_flops += c.flops;
      sp.backward_input_flops += c.backward_input_flops;
      sp.backward_weight_flops += c.backward_weight_flops;
      sp.forward_bytes += c.bytes;
    }
    sp.forward = std::move(fwd);
    for (const Graph* g : {&sp.forward, &sp.backward, &sp.weight, &sp.optimizer}) {
      Status st = g->validate();
      if (!st.ok()) return error(Code::kInternal, "generated program is invalid: ", st.message());
    }
  }
  return stages;
}

}  // namespace ravnest::cg
