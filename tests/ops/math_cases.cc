// Cases and float64 references for the math family (frontend/ops/math.cc): the
// unary ops (Sigmoid, Tanh, Erf, Sqrt, Neg, Exp, Log, Sin, Cos, Reciprocal), the
// broadcasting binary ops (Add, Sub, Mul, Div, Pow), Equal, Where, ReduceSum,
// ReduceMean and Softmax. Shapes cover same-shape, row, column, scalar and
// rank-mismatched broadcasting on either side, odd sizes, and inputs as
// activations (B) and parameters (W). References follow the ONNX definitions in
// float64 and share no code with the rules or kernels.
#include <cmath>
#include <functional>

#include "tests/ops/harness.h"

namespace ravnest::ops_test {
namespace {

using Ints = std::vector<int64_t>;
using Refs = std::vector<RefTensor>;

// ---------------------------------------------------------------- references

// Numpy broadcast of shapes.
Shape broadcast_shape(const std::vector<RefTensor>& in) {
  size_t rank = 0;
  for (const RefTensor& t : in) rank = std::max(rank, t.shape.size());
  Shape out(rank, 1);
  for (const RefTensor& t : in)
    for (size_t i = 0; i < t.shape.size(); ++i) {
      int64_t& o = out[rank - t.shape.size() + i];
      if (t.shape[i] != 1) o = t.shape[i];
    }
  return out;
}

// Element of `t` read at output multi-index `idx` (numpy broadcasting).
double at(const RefTensor& t, const Ints& idx) {
  int64_t flat = 0;
  const size_t lead = idx.size() - t.shape.size();
  for (size_t i = 0; i < t.shape.size(); ++i) flat = flat * t.shape[i] + (t.shape[i] == 1 ? 0 : idx[lead + i]);
  return t.data[static_cast<size_t>(flat)];
}

// out[idx] = f(values of every input at idx), over the broadcast shape.
RefTensor elementwise(const std::vector<RefTensor>& in, DType dtype, const std::function<double(const Vec&)>& f) {
  RefTensor out{dtype, broadcast_shape(in), {}};
  Ints idx(out.shape.size(), 0);
  for (int64_t i = 0; i < numel(out.shape); ++i) {
    Vec v;
    for (const RefTensor& t : in) v.push_back(at(t, idx));
    out.data.push_back(f(v));
    for (size_t d = idx.size(); d-- > 0;) {
      if (++idx[d] < out.shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

ReferenceFn unary_ref(double (*f)(double)) {
  return [f](const Node&, const Refs& in) -> Result<Refs> {
    return Refs{elementwise({in[0]}, in[0].dtype, [f](const Vec& v) { return f(v[0]); })};
  };
}

ReferenceFn binary_ref(std::function<double(double, double)> f) {
  return [f](const Node&, const Refs& in) -> Result<Refs> {
    return Refs{elementwise({in[0], in[1]}, in[0].dtype, [f](const Vec& v) { return f(v[0], v[1]); })};
  };
}

Result<Refs> equal_ref(const Node&, const Refs& in) {
  return Refs{elementwise({in[0], in[1]}, DType::kBool, [](const Vec& v) { return v[0] == v[1] ? 1.0 : 0.0; })};
}

Result<Refs> where_ref(const Node&, const Refs& in) {
  return Refs{elementwise(in, in[1].dtype, [](const Vec& v) { return v[0] != 0 ? v[1] : v[2]; })};
}

// ReduceSum / ReduceMean: axes from input 1 when present, else attribute `axes`.
Result<Refs> reduce_ref(const Node& node, const Refs& in) {
  const RefTensor& x = in[0];
  Ints axes = node.attr_ints("axes");
  if (node.inputs.size() > 1 && !node.inputs[1].empty())
    axes.assign(in[1].data.begin(), in[1].data.end());
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  std::vector<bool> reduce(x.shape.size(), axes.empty() && node.attr_int("noop_with_empty_axes", 0) == 0);
  for (int64_t a : axes) reduce[static_cast<size_t>(a < 0 ? a + rank : a)] = true;
  const bool keepdims = node.attr_int("keepdims", 1) != 0;
  Shape kept, out_shape;
  for (size_t d = 0; d < x.shape.size(); ++d) {
    kept.push_back(reduce[d] ? 1 : x.shape[d]);
    if (!reduce[d] || keepdims) out_shape.push_back(kept.back());
  }
  RefTensor out{x.dtype, out_shape, Vec(static_cast<size_t>(numel(kept)), 0.0)};
  Ints idx(x.shape.size(), 0);
  for (double v : x.data) {
    int64_t flat = 0;
    for (size_t d = 0; d < idx.size(); ++d) flat = flat * kept[d] + (reduce[d] ? 0 : idx[d]);
    out.data[static_cast<size_t>(flat)] += v;
    for (size_t d = idx.size(); d-- > 0;) {
      if (++idx[d] < x.shape[d]) break;
      idx[d] = 0;
    }
  }
  if (node.op == "ReduceMean") {
    const double count = static_cast<double>(x.data.size()) / static_cast<double>(out.data.size());
    for (double& v : out.data) v /= count;
  }
  return Refs{out};
}

Result<Refs> softmax_ref(const Node& node, const Refs& in) {
  const RefTensor& x = in[0];
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  int64_t axis = node.attr_int("axis", -1);
  if (axis < 0) axis += rank;
  int64_t outer = 1, dim = x.shape[static_cast<size_t>(axis)], inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape[static_cast<size_t>(d)];
  for (int64_t d = axis + 1; d < rank; ++d) inner *= x.shape[static_cast<size_t>(d)];
  RefTensor y = x;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t k = 0; k < inner; ++k) {
      auto pos = [&](int64_t j) { return static_cast<size_t>((o * dim + j) * inner + k); };
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j < dim; ++j) m = std::max(m, x.data[pos(j)]);
      for (int64_t j = 0; j < dim; ++j) sum += y.data[pos(j)] = std::exp(x.data[pos(j)] - m);
      for (int64_t j = 0; j < dim; ++j) y.data[pos(j)] /= sum;
    }
  return Refs{y};
}

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double neg(double x) { return -x; }
double reciprocal(double x) { return 1 / x; }

// ---------------------------------------------------------------- cases

InputSpec spec(std::string name, Shape shape, Role role, DType dtype = DType::kF32) {
  return {std::move(name), std::move(shape), role, dtype, {}};
}
InputSpec act(std::string name, Shape shape) { return spec(std::move(name), std::move(shape), Role::kActivation); }
InputSpec param(std::string name, Shape shape) { return spec(std::move(name), std::move(shape), Role::kParameter); }
InputSpec positive(InputSpec s) {
  s.values = uniform(0.5, 2.0);
  return s;
}
InputSpec ints_constant(std::string name, Ints values) {
  InputSpec s = spec(std::move(name), {static_cast<int64_t>(values.size())}, Role::kConstant, DType::kI64);
  s.values = fixed(Vec(values.begin(), values.end()));
  return s;
}

std::vector<OpCase> unary_cases() {
  std::vector<OpCase> cases;
  const std::pair<const char*, bool> ops[] = {{"Sigmoid", false}, {"Tanh", false}, {"Erf", false},
                                              {"Sqrt", true},     {"Neg", false},  {"Exp", false},
                                              {"Log", true},      {"Sin", false},  {"Cos", false},
                                              {"Reciprocal", true}};
  for (const auto& [op, needs_positive] : ops) {
    for (const Shape& shape : {Shape{2, 3, 5}, Shape{7}, Shape{}}) {
      std::string label = std::string(op) + "/" + (shape.empty() ? "scalar" : shape_str(shape));
      InputSpec x = act("x", shape);
      if (needs_positive) x = positive(x);
      else x.values = uniform(-3.0, 3.0);  // past the saturating part of Sigmoid, Tanh and Erf
      cases.push_back({label, make_node(op, {"x"}, {"y"}), {x}});
    }
    InputSpec w = param("w", {4, 3});
    if (needs_positive) w = positive(w);
    cases.push_back({std::string(op) + "/param", make_node(op, {"w"}, {"y"}), {w}});
  }
  return cases;
}

std::vector<OpCase> binary_cases() {
  std::vector<OpCase> cases;
  struct Pair {
    const char* name;
    Shape a, b;
  };
  const Pair pairs[] = {
      {"same", {3, 5}, {3, 5}},           {"row", {4, 5}, {5}},          {"column", {4, 5}, {4, 1}},
      {"scalar", {3, 4}, {}},             {"rank_mismatch", {2, 3, 4}, {3, 1}}, {"both", {3, 1}, {1, 4}},
      {"left_broadcast", {1, 5}, {3, 2, 5}}, {"odd", {1, 7, 1, 3}, {2, 1, 5, 1}},
  };
  for (const char* op : {"Add", "Sub", "Mul", "Div"})
    for (const Pair& p : pairs) {
      InputSpec b = act("b", p.b);
      if (std::string(op) == "Div") b = positive(b);
      cases.push_back({std::string(op) + "/bcast_" + p.name, make_node(op, {"a", "b"}, {"y"}), {act("a", p.a), b}});
      // The broadcast input as a parameter: W work, summed back to its shape.
      InputSpec w = param("w", p.b);
      if (std::string(op) == "Div") w = positive(w);
      cases.push_back({std::string(op) + "/bcast_" + p.name + "/param", make_node(op, {"a", "w"}, {"y"}), {act("a", p.a), w}});
    }
  // Pow: scalar constant exponents (RMSNorm's x^2, GELU's x^3), an int64 one, and a
  // trainable broadcast exponent (gradient into the exponent too).
  auto exponent = [](double e) {
    InputSpec s = spec("e", {}, Role::kConstant);
    s.values = fixed({e});
    return s;
  };
  cases.push_back({"Pow/square", make_node("Pow", {"x", "e"}, {"y"}), {act("x", {2, 3, 5}), exponent(2)}});
  cases.push_back({"Pow/cube", make_node("Pow", {"x", "e"}, {"y"}), {act("x", {4, 7}), exponent(3)}});
  cases.push_back({"Pow/sqrt", make_node("Pow", {"x", "e"}, {"y"}), {positive(act("x", {3, 3})), exponent(0.5)}});
  cases.push_back({"Pow/general", make_node("Pow", {"x", "e"}, {"y"}), {positive(act("x", {5})), exponent(1.7)}});
  InputSpec int_e = spec("e", {}, Role::kConstant, DType::kI64);
  int_e.values = fixed({3});
  cases.push_back({"Pow/int_exponent", make_node("Pow", {"x", "e"}, {"y"}), {act("x", {2, 4}), int_e}});
  cases.push_back({"Pow/param_exponent", make_node("Pow", {"x", "e"}, {"y"}),
                   {positive(act("x", {3, 4})), param("e", {4})}});
  cases.push_back({"Pow/param_base", make_node("Pow", {"w", "e"}, {"y"}),
                   {positive(param("w", {3, 1})), act("e", {2, 3, 4})}});
  return cases;
}

std::vector<OpCase> select_cases() {
  std::vector<OpCase> cases;
  // Equal on floats with ties guaranteed, and on int64 (a causal mask's compare).
  InputSpec fa = spec("a", {3, 4}, Role::kData);
  fa.values = fixed({0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3});
  InputSpec fb = spec("b", {4}, Role::kData);
  fb.values = fixed({0, 1, 5, 3});
  OpCase eq_f{"Equal/f32_row", make_node("Equal", {"a", "b"}, {"y"}), {fa, fb}};
  eq_f.check_gradients = false;
  cases.push_back(eq_f);
  InputSpec ia = spec("a", {2, 5, 1}, Role::kData, DType::kI64);
  ia.values = integers(0, 2);
  InputSpec ib = spec("b", {1, 3}, Role::kData, DType::kI64);
  ib.values = integers(0, 2);
  OpCase eq_i{"Equal/i64_broadcast", make_node("Equal", {"a", "b"}, {"y"}), {ia, ib}};
  eq_i.check_gradients = false;
  cases.push_back(eq_i);
  InputSpec is = spec("b", {}, Role::kData, DType::kI64);
  is.values = fixed({1});
  OpCase eq_s{"Equal/i64_scalar", make_node("Equal", {"a", "b"}, {"y"}), {ia, is}};
  eq_s.check_gradients = false;
  cases.push_back(eq_s);
  // Where: a [T, T] mask over [B, H, T, T] scores with a scalar fill (attention), and
  // every input broadcast, with a trainable branch.
  auto cond = [](Shape shape) {
    InputSpec c = spec("c", std::move(shape), Role::kData, DType::kBool);
    c.values = integers(0, 1);
    return c;
  };
  InputSpec fill = spec("f", {}, Role::kConstant);
  fill.values = fixed({-5});  // small enough that the tolerance stays tight
  cases.push_back({"Where/attention_mask", make_node("Where", {"c", "f", "x"}, {"y"}),
                   {cond({4, 4}), fill, act("x", {2, 2, 4, 4})}});
  cases.push_back({"Where/same", make_node("Where", {"c", "x", "z"}, {"y"}), {cond({3, 5}), act("x", {3, 5}), act("z", {3, 5})}});
  cases.push_back({"Where/broadcast_all", make_node("Where", {"c", "x", "w"}, {"y"}),
                   {cond({2, 1, 4}), act("x", {3, 1}), param("w", {4})}});
  return cases;
}

std::vector<OpCase> reduce_cases() {
  std::vector<OpCase> cases;
  for (const char* op : {"ReduceSum", "ReduceMean"}) {
    const std::string o = op;
    // Axes as an input: ReduceSum at 13+, ReduceMean at 18.
    const int opset = o == "ReduceSum" ? 17 : 18;
    OpCase inner{o + "/input_axes_last", make_node(op, {"x", "axes"}, {"y"}), {act("x", {2, 3, 37}), ints_constant("axes", {-1})}};
    inner.opset = opset;
    cases.push_back(inner);
    OpCase outer{o + "/input_axes_0_2_drop", make_node(op, {"x", "axes"}, {"y"}, {{"keepdims", int64_t{0}}}),
                 {act("x", {4, 3, 5}), ints_constant("axes", {0, 2})}};
    outer.opset = opset;
    cases.push_back(outer);
    OpCase all{o + "/all", make_node(op, {"x"}, {"y"}, {{"keepdims", int64_t{0}}}), {act("x", {3, 5, 2})}};
    all.opset = opset;
    cases.push_back(all);
    OpCase leading{o + "/leading_param", make_node(op, {"w", "axes"}, {"y"}), {param("w", {9, 6}), ints_constant("axes", {0})}};
    leading.opset = opset;
    cases.push_back(leading);
  }
  // ReduceMean at opset 13-17: axes as an attribute (RMSNorm's mean of x^2 over the last dim).
  cases.push_back({"ReduceMean/attr_axes", make_node("ReduceMean", {"x"}, {"y"}, {{"axes", Ints{-1}}}), {act("x", {2, 5, 8})}});
  cases.push_back({"ReduceMean/attr_axes_middle_drop",
                   make_node("ReduceMean", {"x"}, {"y"}, {{"axes", Ints{1}}, {"keepdims", int64_t{0}}}),
                   {act("x", {3, 4, 5})}});
  return cases;
}

std::vector<OpCase> softmax_cases() {
  return {
      {"Softmax/last", make_node("Softmax", {"x"}, {"y"}), {act("x", {2, 3, 7})}},
      {"Softmax/middle", make_node("Softmax", {"x"}, {"y"}, {{"axis", int64_t{1}}}), {act("x", {2, 5, 3})}},
      {"Softmax/first", make_node("Softmax", {"x"}, {"y"}, {{"axis", int64_t{0}}}), {act("x", {4, 3})}},
      {"Softmax/attention", make_node("Softmax", {"x"}, {"y"}, {{"axis", int64_t{-1}}}), {act("x", {2, 2, 5, 5})}},
      {"Softmax/param", make_node("Softmax", {"w"}, {"y"}), {param("w", {3, 4})}},
  };
}

std::vector<OpCase> all_math_cases() {
  std::vector<OpCase> cases;
  for (auto part : {unary_cases, binary_cases, select_cases, reduce_cases, softmax_cases}) {
    std::vector<OpCase> p = part();
    cases.insert(cases.end(), p.begin(), p.end());
  }
  return cases;
}

bool register_references() {
  register_reference("Sigmoid", unary_ref(sigmoid));
  register_reference("Tanh", unary_ref([](double x) { return std::tanh(x); }));
  register_reference("Erf", unary_ref([](double x) { return std::erf(x); }));
  register_reference("Sqrt", unary_ref([](double x) { return std::sqrt(x); }));
  register_reference("Neg", unary_ref(neg));
  register_reference("Exp", unary_ref([](double x) { return std::exp(x); }));
  register_reference("Log", unary_ref([](double x) { return std::log(x); }));
  register_reference("Sin", unary_ref([](double x) { return std::sin(x); }));
  register_reference("Cos", unary_ref([](double x) { return std::cos(x); }));
  register_reference("Reciprocal", unary_ref(reciprocal));
  // Add's reference is registered by tests/ops/core_cases.cc.
  register_reference("Sub", binary_ref([](double a, double b) { return a - b; }));
  register_reference("Mul", binary_ref([](double a, double b) { return a * b; }));
  register_reference("Div", binary_ref([](double a, double b) { return a / b; }));
  register_reference("Pow", binary_ref([](double a, double b) { return std::pow(a, b); }));
  register_reference("Equal", equal_ref);
  register_reference("Where", where_ref);
  register_reference("ReduceSum", reduce_ref);
  register_reference("ReduceMean", reduce_ref);
  register_reference("Softmax", softmax_ref);
  return true;
}

const bool kRegistered = register_references() && register_cases(all_math_cases());

}  // namespace
}  // namespace ravnest::ops_test
