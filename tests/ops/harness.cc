// The per-op harness (harness.h): registries, value generators and run_case.
//
// Guarantees: registration is safe during static initialisation (function-local
// registries); run_case is deterministic for a given (case, seed); every mismatch
// it reports names the case label, the output or input, the flat index, the value
// got and the value wanted. Float inputs are rounded to float32 before both the
// runtime and the float64 reference see them, so both compute on the same point.
#include "tests/ops/harness.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>

#include "frontend/autodiff.h"
#include "frontend/op_table.h"
#include "runtime/executor.h"
#include "runtime/kernel.h"

namespace ravnest::ops_test {
namespace {

std::map<std::string, ReferenceFn>& reference_registry() {
  static std::map<std::string, ReferenceFn> registry;
  return registry;
}

std::vector<OpCase>& case_registry() {
  static std::vector<OpCase> cases;
  return cases;
}

std::vector<std::string>& registry_problems() {
  static std::vector<std::string> problems;
  return problems;
}

bool is_float(DType d) { return d == DType::kF32 || d == DType::kF64 || d == DType::kF16 || d == DType::kBF16; }

// Rounds a value to what a tensor of `dtype` can hold.
double round_to(DType dtype, double v) {
  switch (dtype) {
    case DType::kF32: return static_cast<double>(static_cast<float>(v));
    case DType::kBool: return v != 0 ? 1.0 : 0.0;
    case DType::kF64: return v;
    default: return std::nearbyint(v);
  }
}

// The values of one input: a generator returning exactly numel values is used as
// is; one returning a single value is called once per element.
Result<Vec> generate(const InputSpec& spec, std::mt19937& rng, const std::string& label) {
  const int64_t count = numel(spec.shape);
  auto gen = spec.values;
  if (!gen) {
    if (!is_float(spec.dtype))
      return error(Code::kInvalidArgument, label, ": input '", spec.name, "' is ", dtype_name(spec.dtype),
                   " and needs explicit values (integers(lo, hi) or fixed({...}))");
    gen = uniform(-1.0, 1.0);
  }
  Vec first = gen(rng);
  Vec out;
  if (static_cast<int64_t>(first.size()) == count) {
    out = std::move(first);
  } else if (first.size() == 1) {
    out.reserve(static_cast<size_t>(count));
    out.push_back(first[0]);
    while (static_cast<int64_t>(out.size()) < count) out.push_back(gen(rng).at(0));
  } else {
    return error(Code::kInvalidArgument, label, ": input '", spec.name, "' of shape ", shape_str(spec.shape), " needs ",
                 count, " values, its generator gave ", first.size());
  }
  for (double& v : out) v = round_to(spec.dtype, v);
  return out;
}

Result<TensorData> to_tensor_data(DType dtype, const Shape& shape, const Vec& values) {
  TensorData t;
  t.dtype = dtype;
  t.shape = shape;
  t.bytes.resize(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::kF32: t.data<float>()[i] = static_cast<float>(values[i]); break;
      case DType::kF64: t.data<double>()[i] = values[i]; break;
      case DType::kI64: t.data<int64_t>()[i] = static_cast<int64_t>(values[i]); break;
      case DType::kI32: t.data<int32_t>()[i] = static_cast<int32_t>(values[i]); break;
      case DType::kI8: t.data<int8_t>()[i] = static_cast<int8_t>(values[i]); break;
      case DType::kU8: t.data<uint8_t>()[i] = static_cast<uint8_t>(values[i]); break;
      case DType::kBool: t.data<bool>()[i] = values[i] != 0; break;
      default: return error(Code::kUnsupported, "the harness cannot build ", dtype_name(dtype), " tensors");
    }
  }
  return t;
}

Result<rt::Tensor> to_tensor(DType dtype, const Shape& shape, const Vec& values) {
  RN_ASSIGN_OR_RETURN(TensorData data, to_tensor_data(dtype, shape, values));
  rt::Tensor t = rt::Tensor::empty(dtype, shape);
  if (!data.bytes.empty()) std::memcpy(t.raw(), data.bytes.data(), data.bytes.size());
  return t;
}

Result<Vec> from_tensor(const rt::Tensor& t) {
  Vec out(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    switch (t.dtype()) {
      case DType::kF32: out[i] = t.data<float>()[i]; break;
      case DType::kF64: out[i] = t.data<double>()[i]; break;
      case DType::kI64: out[i] = static_cast<double>(t.data<int64_t>()[i]); break;
      case DType::kI32: out[i] = t.data<int32_t>()[i]; break;
      case DType::kI8: out[i] = t.data<int8_t>()[i]; break;
      case DType::kU8: out[i] = t.data<uint8_t>()[i]; break;
      case DType::kBool: out[i] = t.data<bool>()[i] ? 1.0 : 0.0; break;
      default: return error(Code::kUnsupported, "the harness cannot read ", dtype_name(t.dtype()), " tensors");
    }
  }
  return out;
}

// An output the reference did not compute (an empty RefTensor): not compared.
bool given(const RefTensor& t) { return !(t.shape.empty() && t.data.empty()); }

// Compares `got` with `want` under the harness rule; the error names `what`.
Status compare(const std::string& label, const std::string& what, const Vec& got, const Vec& want, double tolerance) {
  if (got.size() != want.size())
    return error(Code::kInternal, label, ": ", what, " has ", got.size(), " values, the reference ", want.size());
  double scale = 1.0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(got[i] - want[i]);
    if (!(diff <= tolerance * scale))  // also catches NaN
      return error(Code::kInternal, label, ": ", what, " [flat ", i, "]: got ", got[i], ", want ", want[i], " (|diff| ",
                   diff, " > tolerance ", tolerance, " * scale ", scale, ")");
  }
  return ok_status();
}

// The case's inputs with their values, in node input order.
struct Prepared {
  Graph graph;  // the one-node graph, parameters as initializers
  std::vector<RefTensor> ref_inputs;
  std::map<std::string, Vec> values;
};

Result<Prepared> prepare(const OpCase& c, std::mt19937& rng) {
  Prepared p;
  Graph& g = p.graph;
  g.name = "case " + c.label;
  g.opset = c.opset;
  if (c.node.inputs.size() != c.inputs.size())
    return error(Code::kInvalidArgument, c.label, ": the node has ", c.node.inputs.size(), " inputs but the case gives ",
                 c.inputs.size(), " InputSpecs");
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const InputSpec& spec = c.inputs[i];
    if (c.node.inputs[i] != spec.name)
      return error(Code::kInvalidArgument, c.label, ": node input ", i, " is '", c.node.inputs[i],
                   "' but its InputSpec is named '", spec.name, "'");
    if (spec.name.empty()) {
      p.ref_inputs.push_back(RefTensor{DType::kUndefined, {}, {}});
      continue;
    }
    if ((spec.role == Role::kActivation || spec.role == Role::kParameter) && !is_float(spec.dtype))
      return error(Code::kInvalidArgument, c.label, ": input '", spec.name, "' is ", dtype_name(spec.dtype),
                   " and cannot have a gradient; give it Role::kData or Role::kConstant");
    if (p.values.count(spec.name)) {  // the same value read twice
      p.ref_inputs.push_back(RefTensor{spec.dtype, spec.shape, p.values.at(spec.name)});
      continue;
    }
    RN_ASSIGN_OR_RETURN(Vec values, generate(spec, rng, c.label));
    p.ref_inputs.push_back(RefTensor{spec.dtype, spec.shape, values});
    p.values[spec.name] = values;
    g.set_value(ValueInfo::of(spec.name, spec.dtype, spec.shape));
    switch (spec.role) {
      case Role::kActivation:
      case Role::kData: g.inputs.push_back(spec.name); break;
      case Role::kParameter:
      case Role::kConstant: {
        RN_ASSIGN_OR_RETURN(g.initializers[spec.name], to_tensor_data(spec.dtype, spec.shape, values));
        if (spec.role == Role::kParameter) g.parameters.insert(spec.name);
        break;
      }
    }
  }
  Node node = c.node;
  if (node.name.empty()) node.name = c.label;
  g.nodes.push_back(node);
  for (const auto& out : node.outputs)
    if (!out.empty()) g.outputs.push_back(out);
  return p;
}

// Moves parameters from initializers to graph inputs (how stage programs see them).
void params_as_inputs(Graph& g) {
  for (const auto& p : g.parameters) {
    g.initializers.erase(p);
    g.inputs.push_back(p);
  }
  g.parameters.clear();
}

Result<rt::TensorMap> feeds_for(const Graph& program, const Prepared& p) {
  rt::TensorMap feeds;
  for (const auto& name : program.inputs) {
    auto it = p.values.find(name);
    if (it == p.values.end()) continue;
    const ValueInfo* vi = program.find_value(name);
    RN_ASSIGN_OR_RETURN(feeds[name], to_tensor(vi->dtype, vi->static_shape(), it->second));
  }
  return feeds;
}

Result<rt::TensorMap> execute(Graph program, const rt::TensorMap& feeds, const std::string& label,
                              const std::string& what) {
  auto exec = rt::Executor::create(std::move(program), rt::KernelRegistry::global());
  if (!exec.ok()) return exec.status().with_context(label + ": building the " + what + " program");
  rt::TensorMap outputs;
  Status s = (*exec)->run(feeds, &outputs);
  if (!s.ok()) return s.with_context(label + ": running the " + what + " program");
  return outputs;
}

}  // namespace

bool register_reference(const std::string& op, ReferenceFn fn) {
  auto [it, inserted] = reference_registry().emplace(op, std::move(fn));
  (void)it;
  if (!inserted) registry_problems().push_back("op '" + op + "' has two references");
  return true;
}

const ReferenceFn* find_reference(const std::string& op) {
  auto it = reference_registry().find(op);
  return it == reference_registry().end() ? nullptr : &it->second;
}

bool register_cases(std::vector<OpCase> cases) {
  std::vector<OpCase>& all = case_registry();
  for (OpCase& c : cases) {
    for (const OpCase& other : all)
      if (other.label == c.label) registry_problems().push_back("case label '" + c.label + "' is registered twice");
    all.push_back(std::move(c));
  }
  return true;
}

const std::vector<OpCase>& all_cases() { return case_registry(); }

const std::vector<std::string>& registration_problems() { return registry_problems(); }

std::function<Vec(std::mt19937&)> uniform(double lo, double hi) {
  return [lo, hi](std::mt19937& rng) { return Vec{std::uniform_real_distribution<double>(lo, hi)(rng)}; };
}

std::function<Vec(std::mt19937&)> integers(int64_t lo, int64_t hi) {
  return [lo, hi](std::mt19937& rng) {
    return Vec{static_cast<double>(std::uniform_int_distribution<int64_t>(lo, hi)(rng))};
  };
}

std::function<Vec(std::mt19937&)> fixed(Vec values) {
  return [values = std::move(values)](std::mt19937&) { return values; };
}

Status run_case(const OpCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  RN_ASSIGN_OR_RETURN(Prepared p, prepare(c, rng));
  const Node& node = p.graph.nodes[0];
  if (!node.domain.empty() && node.domain != "ai.onnx" && node.domain != kRavnestDomain)
    return error(Code::kInvalidArgument, c.label, ": the harness covers default-domain and ai.ravnest ops, not '",
                 node.domain, "'");
  const ReferenceFn* ref = find_reference(node.op);
  if (!ref) return error(Code::kNotFound, c.label, ": no reference registered for op '", node.op, "'");
  const fe::OpDef* def = fe::find_op(node.domain, node.op, c.opset);
  if (!def) return error(Code::kUnsupported, c.label, ": op '", node.op, "' is not in the op table at opset ", c.opset);

  // Shape rule.
  Status shaped = def->shape(node, p.graph);
  if (!shaped.ok()) return shaped.with_context(c.label + ": shape rule");

  // Reference forward.
  auto ref_out = (*ref)(node, p.ref_inputs);
  if (!ref_out.ok()) return ref_out.status().with_context(c.label + ": reference");
  const std::vector<RefTensor>& want = *ref_out;
  if (want.size() > node.outputs.size())
    return error(Code::kInternal, c.label, ": the reference gave ", want.size(), " outputs, the node has ",
                 node.outputs.size());
  for (size_t k = 0; k < want.size(); ++k) {
    const std::string& y = node.outputs[k];
    if (y.empty() || !given(want[k])) continue;
    const ValueInfo* vi = p.graph.find_value(y);
    if (!vi || !vi->is_static())
      return error(Code::kInternal, c.label, ": the shape rule left output ", k, " '", y, "' without a static type");
    if (vi->static_shape() != want[k].shape || vi->dtype != want[k].dtype)
      return error(Code::kInternal, c.label, ": output ", k, " '", y, "': the shape rule says ",
                   dtype_name(vi->dtype), "[", shape_str(vi->static_shape()), "], the reference ",
                   dtype_name(want[k].dtype), "[", shape_str(want[k].shape), "]");
    if (static_cast<int64_t>(want[k].data.size()) != numel(want[k].shape))
      return error(Code::kInternal, c.label, ": the reference's output ", k, " holds ", want[k].data.size(),
                   " values for shape ", shape_str(want[k].shape));
  }

  // Runtime forward.
  {
    Graph program = p.graph;
    params_as_inputs(program);
    RN_ASSIGN_OR_RETURN(rt::TensorMap feeds, feeds_for(program, p));
    RN_ASSIGN_OR_RETURN(rt::TensorMap got, execute(std::move(program), feeds, c.label, "forward"));
    for (size_t k = 0; k < want.size(); ++k) {
      const std::string& y = node.outputs[k];
      if (y.empty() || !given(want[k])) continue;
      RN_ASSIGN_OR_RETURN(Vec values, from_tensor(got.at(y)));
      RN_RETURN_IF_ERROR(compare(c.label, str_cat("output ", k, " '", y, "'"), values, want[k].data, c.tolerance));
    }
  }
  if (!c.check_gradients) return ok_status();

  // Seeds r_k for every float output the reference computes; loss = sum_k r_k . y_k.
  std::vector<size_t> seeded;
  std::map<std::string, Vec> seeds;
  for (size_t k = 0; k < want.size(); ++k) {
    const std::string& y = node.outputs[k];
    if (y.empty() || !given(want[k]) || !is_float(want[k].dtype)) continue;
    Vec r(want[k].data.size());
    for (double& v : r) v = round_to(DType::kF32, std::uniform_real_distribution<double>(-1, 1)(rng));
    seeded.push_back(k);
    seeds[y] = std::move(r);
  }
  std::vector<size_t> diff_inputs;  // indices into c.inputs
  std::set<std::string> diff_names;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const InputSpec& spec = c.inputs[i];
    if (spec.name.empty() || (spec.role != Role::kActivation && spec.role != Role::kParameter)) continue;
    if (diff_names.insert(spec.name).second) diff_inputs.push_back(i);
  }
  if (seeded.empty() || diff_inputs.empty()) return ok_status();

  // Backward through autodiff and the runtime.
  Graph fwd = p.graph;
  fe::BackwardRequest request;
  for (const auto& [y, r] : seeds) request.seeds.push_back(y);
  for (size_t i : diff_inputs) {
    const InputSpec& spec = c.inputs[i];
    (spec.role == Role::kParameter ? request.params : request.inputs_needing_grad).insert(spec.name);
  }
  auto backward = fe::build_backward(fwd, request);
  if (!backward.ok()) return backward.status().with_context(c.label + ": autodiff");
  const fe::BackwardGraph& bg = *backward;
  std::set<std::string> produced(bg.param_grads.begin(), bg.param_grads.end());
  produced.insert(bg.input_grads.begin(), bg.input_grads.end());

  std::map<std::string, Vec> got_grads;
  if (!produced.empty()) {
    Graph program = fwd;
    program.name = "case " + c.label + " forward+backward";
    params_as_inputs(program);
    for (const auto& [y, r] : seeds) program.inputs.push_back("seed/" + y);  // autodiff's seed names (frontend/autodiff.h)
    for (const Node& n : bg.nodes) program.nodes.push_back(n);
    for (const auto& [name, info] : bg.values) program.set_value(info);
    for (const auto& [name, data] : bg.constants) program.initializers[name] = data;
    program.outputs.assign(produced.begin(), produced.end());
    RN_ASSIGN_OR_RETURN(rt::TensorMap feeds, feeds_for(program, p));
    for (const auto& [y, r] : seeds) {
      const std::string seed_name = "seed/" + y;
      const ValueInfo* vi = program.find_value(seed_name);
      if (!vi) return error(Code::kInternal, c.label, ": autodiff did not type the seed '", seed_name, "'");
      RN_ASSIGN_OR_RETURN(feeds[seed_name], to_tensor(vi->dtype, vi->static_shape(), r));
    }
    RN_ASSIGN_OR_RETURN(rt::TensorMap outs, execute(std::move(program), feeds, c.label, "backward"));
    for (const auto& name : produced) {
      RN_ASSIGN_OR_RETURN(got_grads[name], from_tensor(outs.at(name)));
    }
  }

  // Finite differences of the float64 reference.
  std::vector<RefTensor> point = p.ref_inputs;
  auto loss_at = [&](const std::vector<RefTensor>& inputs) -> Result<double> {
    auto out = (*ref)(node, inputs);
    if (!out.ok()) return out.status().with_context(c.label + ": reference (finite differences)");
    double loss = 0;
    for (size_t k : seeded) {
      const Vec& r = seeds.at(node.outputs[k]);
      if (k >= out->size() || (*out)[k].data.size() != r.size())
        return error(Code::kInternal, c.label, ": the reference's output ", k, " changed size under perturbation");
      for (size_t j = 0; j < r.size(); ++j) loss += r[j] * (*out)[k].data[j];
    }
    return loss;
  };
  for (size_t i : diff_inputs) {
    const InputSpec& spec = c.inputs[i];
    Vec numeric(p.values.at(spec.name).size());
    // Every node input slot reading this value moves together.
    std::vector<size_t> slots;
    for (size_t s = 0; s < c.inputs.size(); ++s)
      if (c.inputs[s].name == spec.name) slots.push_back(s);
    for (size_t j = 0; j < numeric.size(); ++j) {
      const double x = p.values.at(spec.name)[j];
      const double h = c.fd_step * std::max(1.0, std::fabs(x));
      for (size_t s : slots) point[s].data[j] = x + h;
      RN_ASSIGN_OR_RETURN(double up, loss_at(point));
      for (size_t s : slots) point[s].data[j] = x - h;
      RN_ASSIGN_OR_RETURN(double down, loss_at(point));
      for (size_t s : slots) point[s].data[j] = x;
      numeric[j] = (up - down) / (2 * h);
    }
    const std::string gname = fe::grad_name(spec.name);
    const std::string what = str_cat(spec.role == Role::kParameter ? "W gradient of parameter '" : "B gradient of input '",
                                     spec.name, "'");
    auto it = got_grads.find(gname);
    Vec got = it != got_grads.end() ? it->second : Vec(numeric.size(), 0.0);  // no gradient flows: zero
    RN_RETURN_IF_ERROR(compare(c.label, what, got, numeric, c.tolerance));
  }
  return ok_status();
}

Node make_node(std::string op, std::vector<std::string> inputs, std::vector<std::string> outputs,
               std::map<std::string, AttrValue> attrs) {
  Node n;
  n.op = std::move(op);
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  n.attrs = std::move(attrs);
  return n;
}

}  // namespace ravnest::ops_test
