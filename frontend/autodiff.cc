#include "frontend/autodiff.h"

#include <algorithm>

#include "frontend/op_table.h"

namespace ravnest::fe {

std::string grad_name(const std::string& value) { return "grad/" + value; }

namespace {

std::string seed_name(const std::string& value) { return "seed/" + value; }

// Values reachable forward from `sources` through the graph's nodes.
std::set<std::string> reachable_forward(const Graph& g, const std::set<std::string>& sources) {
  std::set<std::string> reached(sources.begin(), sources.end());
  for (const Node& node : g.nodes) {
    bool hit = false;
    for (const auto& in : node.inputs) hit |= !in.empty() && reached.count(in);
    if (hit)
      for (const auto& out : node.outputs)
        if (!out.empty()) reached.insert(out);
  }
  return reached;
}

// Values from which some value in `sinks` is reachable.
std::set<std::string> reaching_backward(const Graph& g, const std::vector<std::string>& sinks) {
  std::set<std::string> reaching(sinks.begin(), sinks.end());
  for (auto it = g.nodes.rbegin(); it != g.nodes.rend(); ++it) {
    bool hit = false;
    for (const auto& out : it->outputs) hit |= !out.empty() && reaching.count(out);
    if (hit)
      for (const auto& in : it->inputs)
        if (!in.empty()) reaching.insert(in);
  }
  return reaching;
}

void rename_everywhere(BackwardGraph& bg, const std::string& from, const std::string& to) {
  for (Node& node : bg.nodes) {
    for (auto& in : node.inputs)
      if (in == from) in = to;
    for (auto& out : node.outputs)
      if (out == from) out = to;
  }
  auto it = bg.values.find(from);
  if (it != bg.values.end()) {
    ValueInfo info = it->second;
    info.name = to;
    bg.values.erase(it);
    bg.values[to] = info;
  }
}

}  // namespace

GradBuilder::GradBuilder(Graph& forward, const BackwardRequest& request, BackwardGraph& out)
    : forward_(forward), request_(request), out_(out) {}

const ValueInfo& GradBuilder::info(const std::string& value) const {
  if (const ValueInfo* v = forward_.find_value(value)) return *v;
  auto it = out_.values.find(value);
  RN_ENFORCE(it != out_.values.end(), "no type for value '", value, "'");
  return it->second;
}

std::string GradBuilder::new_value(const std::string& hint, DType dtype, const Shape& shape) {
  std::string name;
  do {
    name = hint + "#" + std::to_string(name_counts_[hint]++);
  } while (forward_.find_value(name) || out_.values.count(name));
  out_.values[name] = ValueInfo::of(name, dtype, shape);
  return name;
}

std::string GradBuilder::constant(const std::string& hint, TensorData data) {
  std::string name = new_value("const/" + hint, data.dtype, data.shape);
  out_.constants[name] = std::move(data);
  return name;
}

void GradBuilder::contribute(const std::string& target, const std::string& grad_value) {
  RN_ENFORCE(!summed_.count(target), "gradient of '", target, "' contributed to after it was summed");
  contributions_[target].push_back(grad_value);
}

void GradBuilder::emit(Node node, const std::string& target) {
  out_.nodes.push_back(std::move(node));
  out_.work.push_back(is_param(target) ? Work::kW : Work::kB);
}

std::string GradBuilder::grad(const std::string& value) {
  auto done = summed_.find(value);
  if (done != summed_.end()) return done->second;
  auto it = contributions_.find(value);
  if (it == contributions_.end() || it->second.empty()) return "";
  std::string result;
  if (it->second.size() == 1) {
    result = it->second.front();
  } else {
    const ValueInfo& vi = info(value);
    result = new_value("gradsum/" + value, vi.dtype, vi.static_shape());
    Node sum;
    sum.name = "sum_grad/" + value;
    sum.op = "Sum";
    sum.inputs = it->second;
    sum.outputs = {result};
    emit(std::move(sum), value);
  }
  summed_[value] = result;
  return result;
}

std::string GradBuilder::forward_output(const std::string& node_name, size_t index, DType dtype, const Shape& shape) {
  for (Node& node : forward_.nodes) {
    if (node.name != node_name) continue;
    if (node.outputs.size() <= index) node.outputs.resize(index + 1);
    if (node.outputs[index].empty()) {
      std::string name = node_name + "/out" + std::to_string(index);
      node.outputs[index] = name;
      forward_.set_value(ValueInfo::of(name, dtype, shape));
    }
    return node.outputs[index];
  }
  RN_ENFORCE(false, "forward node '", node_name, "' not found");
  return "";
}

std::string GradBuilder::reduce_to_shape(const std::string& grad_value, const Shape& target_shape,
                                         const std::string& target) {
  Shape grad_shape = info(grad_value).static_shape();
  if (grad_shape == target_shape) return grad_value;
  // Align target to the right (numpy broadcasting) and sum over broadcast axes.
  size_t lead = grad_shape.size() - target_shape.size();
  std::vector<int64_t> axes;
  for (size_t i = 0; i < grad_shape.size(); ++i) {
    if (i < lead) axes.push_back(static_cast<int64_t>(i));
    else if (target_shape[i - lead] == 1 && grad_shape[i] != 1) axes.push_back(static_cast<int64_t>(i));
  }
  Shape kept;  // shape after ReduceSum with keepdims=1
  for (size_t i = 0; i < grad_shape.size(); ++i)
    kept.push_back(std::find(axes.begin(), axes.end(), static_cast<int64_t>(i)) != axes.end() ? 1 : grad_shape[i]);
  std::string axes_const = constant("axes", TensorData::from_ints(axes, {static_cast<int64_t>(axes.size())}));
  DType dtype = info(grad_value).dtype;
  std::string reduced = new_value("reduce/" + target, dtype, kept);
  Node sum;
  sum.name = "reduce_grad/" + reduced;
  sum.op = "ReduceSum";
  sum.inputs = {grad_value, axes_const};
  sum.outputs = {reduced};
  sum.attrs["keepdims"] = int64_t{1};
  emit(std::move(sum), target);
  if (kept == target_shape) return reduced;
  std::string shape_const = constant("shape", TensorData::from_ints(target_shape, {static_cast<int64_t>(target_shape.size())}));
  std::string reshaped = new_value("reshape/" + target, dtype, target_shape);
  Node reshape;
  reshape.name = "reshape_grad/" + reshaped;
  reshape.op = "Reshape";
  reshape.inputs = {reduced, shape_const};
  reshape.outputs = {reshaped};
  emit(std::move(reshape), target);
  return reshaped;
}

Status GradBuilder::run() {
  std::set<std::string> sources(request_.params.begin(), request_.params.end());
  sources.insert(request_.inputs_needing_grad.begin(), request_.inputs_needing_grad.end());
  std::set<std::string> downstream = reachable_forward(forward_, sources);
  std::set<std::string> upstream = reaching_backward(forward_, request_.seeds);
  for (const auto& v : downstream)
    if (upstream.count(v)) needs_grad_.insert(v);

  for (const std::string& seed : request_.seeds) {
    const ValueInfo* vi = forward_.find_value(seed);
    if (!vi || !vi->is_static())
      return error(Code::kInvalidArgument, "gradient seed '", seed, "' has no static type");
    std::string name = seed_name(seed);
    out_.values[name] = ValueInfo::of(name, vi->dtype, vi->static_shape());
    if (needs_grad_.count(seed)) contribute(seed, name);
  }

  // Reverse sweep: when a node is visited every consumer of its outputs has
  // already contributed, so grad(output) is final.
  std::vector<Node> nodes = forward_.nodes;  // rules may amend forward_ nodes (extra outputs)
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    const Node& node = *it;
    bool input_needs = false;
    for (const auto& in : node.inputs) input_needs |= !in.empty() && needs_grad_.count(in);
    bool output_has = false;
    for (const auto& out : node.outputs) output_has |= !out.empty() && contributions_.count(out);
    if (!input_needs || !output_has) continue;
    const OpDef* def = find_op(node.domain, node.op, static_cast<int>(forward_.opset));
    if (!def || !def->grad)
      return error(Code::kUnsupported, "node '", node.name, "' has op '", node.op, "' (opset ", forward_.opset,
                   ") on the gradient path, and Ravnest has no gradient rule for it");
    Status status = def->grad(node, *this);
    if (!status.ok()) return status.with_context("gradient of " + node.describe());
  }

  // Name the final gradients grad/<value>; a gradient that is a value the
  // backward created is renamed in place, anything else gets an Identity.
  std::unordered_map<std::string, std::string> renamed;
  auto finish = [&](const std::string& value, std::vector<std::string>* list) {
    std::string g = grad(value);
    if (g.empty()) return;
    // A gradient already named for another value (Add hands the same dY to both
    // of its inputs) is copied, not renamed away from that value.
    bool taken = renamed.count(g) != 0;
    if (taken) g = renamed[g];
    std::string want = grad_name(value);
    bool created_here = !taken && out_.values.count(g) && g.rfind("seed/", 0) != 0 && !out_.constants.count(g);
    bool produced_by_node = false;
    for (const Node& n : out_.nodes)
      for (const auto& o : n.outputs) produced_by_node |= o == g;
    if (created_here && produced_by_node) {
      rename_everywhere(out_, g, want);
      renamed[g] = want;
    } else {
      const ValueInfo& vi = info(value);
      out_.values[want] = ValueInfo::of(want, vi.dtype, vi.static_shape());
      Node id;
      id.name = "identity_grad/" + value;
      id.op = "Identity";
      id.inputs = {g};
      id.outputs = {want};
      emit(std::move(id), value);
    }
    list->push_back(want);
  };
  for (const auto& p : request_.params) finish(p, &out_.param_grads);
  for (const auto& x : request_.inputs_needing_grad) finish(x, &out_.input_grads);

  // B must never wait for W: anything a B node reads becomes B work.
  bool changed = true;
  while (changed) {
    changed = false;
    std::set<std::string> b_reads;
    for (size_t i = 0; i < out_.nodes.size(); ++i)
      if (out_.work[i] == Work::kB)
        for (const auto& in : out_.nodes[i].inputs) b_reads.insert(in);
    for (const auto& g : out_.input_grads) b_reads.insert(g);
    for (size_t i = 0; i < out_.nodes.size(); ++i) {
      if (out_.work[i] != Work::kW) continue;
      for (const auto& o : out_.nodes[i].outputs)
        if (b_reads.count(o)) {
          out_.work[i] = Work::kB;
          changed = true;
        }
    }
  }
  return ok_status();
}

Result<BackwardGraph> build_backward(Graph& forward, const BackwardRequest& request) {
  BackwardGraph out;
  GradBuilder builder(forward, request, out);
  RN_RETURN_IF_ERROR(builder.run());
  return out;
}

}  // namespace ravnest::fe
