// import_model: read -> opset check -> EVAL-export check -> op check -> input
// shapes -> ONNX shape inference -> IR -> fold_constants -> infer_shapes ->
// remove_dead_nodes -> parameters. See import.h for what the result guarantees.
#include "frontend/import.h"

#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <exception>
#include <filesystem>
#include <set>

#include "common/log.h"
#include "common/onnx_graph.h"
#include "frontend/model_reader.h"
#include "frontend/op_table.h"
#include "frontend/passes.h"
#include "frontend/rule_util.h"

namespace ravnest::fe {
namespace {

bool is_default_domain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

Result<int64_t> domain_opset(const onnx::ModelProto& model, const std::string& domain) {
  for (const auto& entry : model.opset_import())
    if (is_default_domain(entry.domain()) == is_default_domain(domain) &&
        (is_default_domain(domain) || entry.domain() == domain))
      return static_cast<int64_t>(entry.version());
  return error(Code::kInvalidArgument, "the model imports no opset for domain '",
               is_default_domain(domain) ? "ai.onnx" : domain, "'");
}

Status check_opset(const onnx::ModelProto& model, const std::string& path) {
  auto opset = domain_opset(model, "");
  if (!opset.ok()) return opset.status().with_context("'" + path + "'");
  if (opset.value() < kMinOpset || opset.value() > kMaxOpset)
    return error(Code::kUnsupported, "'", path, "' uses ONNX opset ", opset.value(), ", but Ravnest supports opsets ",
                 kMinOpset, " to ", kMaxOpset, "; re-export the model with torch.onnx.export(..., opset_version=17)");
  return ok_status();
}

// Gives unnamed nodes the names graph_from_proto would give them, so that errors
// raised before and after conversion name a node the same way.
void name_unnamed_nodes(onnx::ModelProto& model) {
  int unnamed = 0;
  for (auto& np : *model.mutable_graph()->mutable_node())
    if (np.name().empty()) np.set_name(np.op_type() + "_" + std::to_string(unnamed++));
}

// A PyTorch export made in EVAL mode or with constant folding cannot be trained
// faithfully: BatchNorm is folded into the Conv weights or runs on running
// statistics, Linear weights are pre-transposed into unnamed initializers, and
// initializers with equal values are merged (tying unrelated weights). Each
// rule below is one such trace; a TRAINING export without folding shows none.
// Only files whose producer is PyTorch are checked: the rules describe its
// exporter, and other producers may name or share initializers as they like.
Status check_trainable_export(const onnx::ModelProto& model, const std::string& path) {
  if (model.producer_name() != "pytorch") return ok_status();
  const auto& graph = model.graph();
  std::set<std::string> float_initializers;
  for (const auto& init : graph.initializer())
    if (init.data_type() == onnx::TensorProto::FLOAT || init.data_type() == onnx::TensorProto::DOUBLE ||
        init.data_type() == onnx::TensorProto::FLOAT16)
      float_initializers.insert(init.name());
  struct Finding {
    std::string first;
    int count = 0;
  };
  Finding inference_bn, merged, folded;
  auto note = [](Finding& f, const std::string& text) {
    if (f.count++ == 0) f.first = text;
  };
  std::set<std::string> folded_seen;
  for (const auto& np : graph.node()) {
    if (np.op_type() == "BatchNormalization" && is_default_domain(np.domain())) {
      int64_t training_mode = 0;
      for (const auto& attr : np.attribute())
        if (attr.name() == "training_mode") training_mode = attr.i();
      if (training_mode == 0)
        note(inference_bn, "BatchNormalization node '" + np.name() +
                               "' is in inference mode (training_mode=0: it would normalise with running statistics)");
    }
    if (np.op_type() == "Identity" && np.input_size() == 1 && float_initializers.count(np.input(0)) &&
        np.output_size() == 1)
      note(merged, "node '" + np.name() + "' makes '" + np.output(0) + "' a copy of initializer '" + np.input(0) +
                       "' (initializers with equal values were merged, which would tie them in training)");
    if (np.op_type() == "Identity") continue;  // copies are the merged-initializer trace; name the real reader
    for (const auto& in : np.input())
      if (in.rfind("onnx::", 0) == 0 && float_initializers.count(in) && folded_seen.insert(in).second)
        note(folded, "initializer '" + in + "' read by " + np.op_type() + " node '" + np.name() +
                         "' has no PyTorch parameter name: constant folding computed it (a BatchNorm folded into a "
                         "Conv, or a Linear weight pre-transposed)");
  }
  std::string evidence;
  for (const Finding* f : {&folded, &merged, &inference_bn}) {
    if (f->count == 0) continue;
    evidence += (evidence.empty() ? "" : "; ") + f->first;
    if (f->count > 1) evidence += " (and " + std::to_string(f->count - 1) + " more like it)";
  }
  if (evidence.empty()) return ok_status();
  return error(Code::kInvalidArgument, "'", path,
               "' is a PyTorch export made in EVAL mode or with constant folding, which Ravnest cannot train "
               "faithfully: ",
               evidence,
               ". Re-export it in training mode without constant folding: torch.onnx.export(model, args, path, "
               "opset_version=17, training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)");
}

Status check_ops(const onnx::ModelProto& model) {
  for (const auto& np : model.graph().node()) {
    Node node;
    node.name = np.name();
    node.op = np.op_type();
    node.domain = is_default_domain(np.domain()) ? "" : np.domain();
    auto opset = domain_opset(model, node.domain);
    RN_RETURN_IF_ERROR(check_op(node, opset.ok() ? opset.value() : 0));
  }
  return ok_status();
}

std::string proto_shape_string(const onnx::TensorShapeProto& shape) {
  std::string out;
  for (const auto& dim : shape.dim()) {
    if (!out.empty()) out += "x";
    out += dim.has_dim_value() ? std::to_string(dim.dim_value()) : dim.has_dim_param() ? dim.dim_param() : "?";
  }
  return out.empty() ? "scalar" : out;
}

// Applies --shape and --batch to the graph inputs, then requires every input to be static.
Status apply_input_shapes(onnx::ModelProto& model, const ImportOptions& options) {
  auto* graph = model.mutable_graph();
  std::set<std::string> initializers;
  for (const auto& init : graph->initializer()) initializers.insert(init.name());
  std::map<std::string, onnx::ValueInfoProto*> inputs;
  std::string input_list;
  for (auto& vi : *graph->mutable_input()) {
    if (initializers.count(vi.name())) continue;
    inputs[vi.name()] = &vi;
    input_list += (input_list.empty() ? "'" : ", '") + vi.name() + "'";
  }
  for (const auto& [name, shape] : options.shapes) {
    auto it = inputs.find(name);
    if (it == inputs.end())
      return error(Code::kInvalidArgument, "--shape names input '", name, "', but the model's inputs are ", input_list);
    auto* type = it->second->mutable_type();
    if (!type->has_tensor_type()) return error(Code::kUnsupported, "graph input '", name, "' is not a tensor");
    auto* proto_shape = type->mutable_tensor_type()->mutable_shape();
    if (type->tensor_type().has_shape() && proto_shape->dim_size() != static_cast<int>(shape.size()))
      return error(Code::kInvalidArgument, "--shape ", name, "=", shape_str(shape), " has rank ", shape.size(),
                   ", but the model declares input '", name, "' as ", proto_shape_string(*proto_shape), " (rank ",
                   proto_shape->dim_size(), ")");
    proto_shape->clear_dim();
    for (int64_t d : shape) proto_shape->add_dim()->set_dim_value(d);
  }
  for (auto& [name, vi] : inputs) {
    const auto& type = vi->type();
    if (!type.has_tensor_type()) return error(Code::kUnsupported, "graph input '", name, "' is not a tensor");
    if (!type.tensor_type().has_shape())
      return error(Code::kInvalidArgument, "graph input '", name, "' has no shape; pass --shape ", name, "=...");
    auto* shape = vi->mutable_type()->mutable_tensor_type()->mutable_shape();
    if (options.batch && shape->dim_size() > 0 && !shape->dim(0).has_dim_value())
      shape->mutable_dim(0)->set_dim_value(*options.batch);
    for (int i = 0; i < shape->dim_size(); ++i) {
      const auto& dim = shape->dim(i);
      if (dim.has_dim_value()) continue;
      std::string dim_name = dim.has_dim_param() ? "symbolic dim '" + dim.dim_param() + "'" : "unknown dim";
      return error(Code::kInvalidArgument, "graph input '", name, "' has ", dim_name, " (dim ", i, " of ",
                   proto_shape_string(*shape), ") with no value; pass --shape ", name, "=... or --batch N");
    }
  }
  return ok_status();
}

// Intermediate and output shapes recorded at export time may contradict the new
// input shapes; ONNX inference and our rules recompute them from the inputs.
void forget_recorded_shapes(onnx::ModelProto& model) {
  auto* graph = model.mutable_graph();
  graph->clear_value_info();
  for (auto& out : *graph->mutable_output())
    if (out.type().has_tensor_type()) out.mutable_type()->mutable_tensor_type()->clear_shape();
}

Status run_onnx_shape_inference(onnx::ModelProto& model, const std::string& path) {
  try {
    onnx::ShapeInferenceOptions options(/*check_type=*/true, /*strict_mode=*/1, /*data_prop=*/false);
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    return error(Code::kInvalidArgument, "ONNX shape inference failed on '", path, "': ", e.what(),
                 "; check the --shape/--batch values against the model's inputs");
  }
  return ok_status();
}

// Warns where our shape rules disagree with ONNX's inference (a rule bug or an ONNX
// inference limitation); our rules win.
void compare_with_onnx(const Graph& graph, const std::map<std::string, ValueInfo>& onnx_types) {
  for (const auto& [name, onnx_info] : onnx_types) {
    const ValueInfo* ours = graph.find_value(name);
    if (!ours || !onnx_info.is_static() || !ours->is_static()) continue;
    if (ours->static_shape() != onnx_info.static_shape())
      RN_LOG_WARN("value '", name, "': Ravnest infers shape ", ours->shape_string(), ", ONNX inferred ",
                  onnx_info.shape_string(), "; using Ravnest's");
  }
}

// Takes the initializers whose bytes are viewed out of `model`'s graph (and out of its inputs, where
// old exports list them), so graph_from_proto does not read them; returns them with their type and shape
// and no bytes. A view whose size does not match its shape is dropped: its external-data read reports it.
using Viewed = std::map<std::string, TensorData>;
Result<Viewed> take_viewed_initializers(onnx::ModelProto& model, WeightViews& views) {
  Viewed taken;
  auto* g = model.mutable_graph();
  auto* inits = g->mutable_initializer();
  for (int i = 0; i < inits->size();) {
    const onnx::TensorProto& init = inits->Get(i);
    auto view = views.bytes.find(init.name());
    if (view == views.bytes.end()) {
      ++i;
      continue;
    }
    TensorData t;
    RN_ASSIGN_OR_RETURN(t.dtype, dtype_from_onnx(init.data_type()));
    t.shape.assign(init.dims().begin(), init.dims().end());
    Result<int64_t> n = checked_numel(t.shape);
    if (!n.ok() || static_cast<uint64_t>(n.value()) * dtype_size(t.dtype) != view->second.size()) {
      views.bytes.erase(view);
      ++i;
      continue;
    }
    taken[init.name()] = std::move(t);
    inits->DeleteSubrange(i, 1);
  }
  auto* inputs = g->mutable_input();
  for (int i = 0; i < inputs->size();) {
    if (taken.count(inputs->Get(i).name())) inputs->DeleteSubrange(i, 1);
    else ++i;
  }
  std::erase_if(views.bytes, [&](const auto& view) { return !taken.count(view.first); });
  return taken;
}

// Puts the taken initializers into `graph` as graph_from_proto would have: the value described by the
// tensor unless the file's value_info describes it.
void put_viewed_initializers(const onnx::ModelProto& model, Viewed taken, Graph& graph) {
  std::set<std::string> described;
  for (const auto& vi : model.graph().value_info()) described.insert(vi.name());
  for (auto& [name, tensor] : taken) {
    if (!described.count(name)) graph.set_value(ValueInfo::of(name, tensor.dtype, tensor.shape));
    graph.initializers[name] = std::move(tensor);
  }
}

// After the passes: views of initializers that are gone are dropped, and those that are no longer
// parameters (running state) get their own bytes, so only parameters are left without bytes.
void settle_views(Graph& graph, WeightViews& views) {
  for (auto it = views.bytes.begin(); it != views.bytes.end();) {
    auto init = graph.initializers.find(it->first);
    if (init != graph.initializers.end() && graph.parameters.count(it->first)) {
      ++it;
      continue;
    }
    if (init != graph.initializers.end()) init->second.bytes.assign(it->second.begin(), it->second.end());
    it = views.bytes.erase(it);
  }
  if (views.bytes.empty()) views.file.reset();
}

Status check_all_static(const Graph& graph) {
  for (const auto& [name, info] : graph.values)
    if (!info.is_static() || info.dtype == DType::kUndefined)
      return error(Code::kInternal, "value '", name, "' has no static type (", info.shape_string(),
                   ") after shape inference");
  return ok_status();
}

}  // namespace

Status add_shape_option(const std::string& spec, ImportOptions& options) {
  size_t eq = spec.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    return error(Code::kInvalidArgument, "--shape '", spec, "' must look like NAME=64x1x28x28");
  std::string name = spec.substr(0, eq);
  auto shape = parse_shape(spec.substr(eq + 1));
  if (!shape.ok()) return shape.status().with_context("--shape " + spec);
  for (int64_t d : shape.value())
    if (d <= 0) return error(Code::kInvalidArgument, "--shape ", spec, ": every dim must be positive");
  options.shapes[name] = shape.value();
  return ok_status();
}

Status set_batch_option(const std::string& text, ImportOptions& options) {
  auto shape = parse_shape(text);
  if (!shape.ok() || shape->size() != 1 || shape.value()[0] <= 0)
    return error(Code::kInvalidArgument, "--batch '", text, "' must be a positive integer");
  options.batch = shape.value()[0];
  return ok_status();
}

Result<Graph> import_model(const std::string& path, const ImportOptions& options) {
  return import_model(path, options, nullptr);
}

Result<Graph> import_model(const std::string& path, const ImportOptions& options, WeightViews* views) {
  WeightViews none;  // import_model without views: read_external reads every weight
  WeightViews& weights = views ? *views : none;
  RN_ASSIGN_OR_RETURN(onnx::ModelProto model, views ? read_model_mapped(path, views) : read_model_for_import(path));
  RN_RETURN_IF_ERROR(check_opset(model, path));
  name_unnamed_nodes(model);
  RN_RETURN_IF_ERROR(check_trainable_export(model, path));
  RN_RETURN_IF_ERROR(check_ops(model));
  RN_RETURN_IF_ERROR(apply_input_shapes(model, options));
  forget_recorded_shapes(model);
  RN_RETURN_IF_ERROR(run_onnx_shape_inference(model, path));

  std::string base_dir = std::filesystem::path(path).parent_path().string();
  RN_ASSIGN_OR_RETURN(Viewed viewed, take_viewed_initializers(model, weights));
  auto converted = graph_from_proto(model, base_dir.empty() ? "." : base_dir);
  if (!converted.ok()) return converted.status().with_context("loading '" + path + "'");
  Graph graph = std::move(converted).value();
  put_viewed_initializers(model, std::move(viewed), graph);
  if (graph.name.empty()) graph.name = std::filesystem::path(path).stem().string();
  std::map<std::string, ValueInfo> onnx_types(graph.values.begin(), graph.values.end());

  // Float initializers of the file are weights: never folded, trained if read.
  for (const auto& [name, tensor] : graph.initializers)
    if (rules::is_float(tensor.dtype)) graph.parameters.insert(name);
  RN_RETURN_IF_ERROR(fold_constants(graph));
  RN_RETURN_IF_ERROR(infer_shapes(graph));
  remove_dead_nodes(graph);
  RN_RETURN_IF_ERROR(mark_state(graph));
  settle_views(graph, weights);
  compare_with_onnx(graph, onnx_types);
  RN_RETURN_IF_ERROR(check_all_static(graph));
  RN_RETURN_IF_ERROR(graph.validate());
  return graph;
}

}  // namespace ravnest::fe
