// Op family "math": elementwise unary and binary math (numpy broadcasting),
// comparisons and selection (Equal, Where), reductions (ReduceSum, ReduceMean) and
// Softmax, with their ai.ravnest gradient ops (docs/training-ops.md, "Math").
//
// Guarantees: every differentiable op here has a gradient rule whose nodes are B
// work for activations and W work for parameters; gradients of broadcast inputs
// are summed back to each input's shape (GradBuilder::reduce_to_shape). Constant
// inputs fold at compile time (Add/Sub/Mul/Div through rules::fold_binary, the rest
// through fold_math below), so masks and rotary tables built from buffers cost
// nothing at run time.
#include <algorithm>
#include <cmath>
#include <functional>

#include "frontend/grad_util.h"
#include "frontend/op_families.h"
#include "frontend/rule_util.h"
#include "frontend/rules.h"

namespace ravnest::fe {
namespace {

using rules::in_dtype;
using rules::in_shape;
using rules::node_error;
using rules::set_out;

// ---------------------------------------------------------------- shape rules

// Output 0 = numpy broadcast of every input; dtype `out_dtype` or input `dtype_from`'s.
Status broadcast_all(const Node& node, Graph& graph, size_t first, size_t dtype_from, DType out_dtype) {
  if (node.inputs.size() <= first) return node_error(node, "needs ", first + 1, " or more inputs");
  RN_ASSIGN_OR_RETURN(Shape y, in_shape(node, graph, first));
  for (size_t i = first + 1; i < node.inputs.size(); ++i) {
    RN_ASSIGN_OR_RETURN(Shape s, in_shape(node, graph, i));
    RN_ASSIGN_OR_RETURN(y, rules::broadcast(node, y, s));
  }
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, dtype_from));
  set_out(graph, node, 0, out_dtype == DType::kUndefined ? dtype : out_dtype, y);
  return ok_status();
}

Status same_dtypes(const Node& node, const Graph& graph, size_t a, size_t b) {
  RN_ASSIGN_OR_RETURN(DType da, in_dtype(node, graph, a));
  RN_ASSIGN_OR_RETURN(DType db, in_dtype(node, graph, b));
  if (da != db)
    return node_error(node, "inputs ", a, " and ", b, " have different element types (", dtype_name(da), " and ",
                      dtype_name(db), ")");
  return ok_status();
}

Status shape_unary_float(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (!rules::is_float(dtype)) return node_error(node, "needs a floating-point input, got ", dtype_name(dtype));
  return rules::shape_same(node, graph);
}

// Pow: the exponent may have another numeric type than the base (ONNX T1/T2).
Status shape_pow(const Node& node, Graph& graph) {
  if (node.inputs.size() != 2) return node_error(node, "needs 2 inputs (X, Y)");
  return broadcast_all(node, graph, 0, 0, DType::kUndefined);
}

Status shape_equal(const Node& node, Graph& graph) {
  if (node.inputs.size() != 2) return node_error(node, "needs 2 inputs (A, B)");
  RN_RETURN_IF_ERROR(same_dtypes(node, graph, 0, 1));
  return broadcast_all(node, graph, 0, 0, DType::kBool);
}

Status shape_where(const Node& node, Graph& graph) {
  if (node.inputs.size() != 3) return node_error(node, "needs 3 inputs (condition, X, Y)");
  RN_ASSIGN_OR_RETURN(DType cond, in_dtype(node, graph, 0));
  if (cond != DType::kBool) return node_error(node, "condition must be bool, got ", dtype_name(cond));
  RN_RETURN_IF_ERROR(same_dtypes(node, graph, 1, 2));
  return broadcast_all(node, graph, 0, 1, DType::kUndefined);
}

// Softmax (opset 13): one axis, default -1.
Status shape_softmax(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_RETURN_IF_ERROR(rules::norm_axis(node, node.attr_int("axis", -1), static_cast<int64_t>(x.size())).status());
  return shape_unary_float(node, graph);
}

// SoftmaxGrad(dY, Y): like ReluGrad, plus the axis check.
Status shape_softmax_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape y, in_shape(node, graph, 1));
  RN_RETURN_IF_ERROR(rules::norm_axis(node, node.attr_int("axis", -1), static_cast<int64_t>(y.size())).status());
  return rules::shape_relu_grad(node, graph);
}

// PowGrad(dY, X, E) -> dX at dY's shape, which must be the broadcast of X and E.
Status shape_pow_grad(const Node& node, Graph& graph) {
  if (node.inputs.size() != 3) return node_error(node, "needs 3 inputs (dY, X, E)");
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(Shape e, in_shape(node, graph, 2));
  RN_ASSIGN_OR_RETURN(Shape y, rules::broadcast(node, x, e));
  if (y != dy) return node_error(node, "dY is ", shape_str(dy), " but X and E broadcast to ", shape_str(y));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  set_out(graph, node, 0, dtype, dy);
  return ok_status();
}

// ReduceGrad(dY) -> dX of attr `shape`: dY (same rank) broadcast, times attr `scale`.
Status shape_reduce_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (!node.has_attr("shape")) return node_error(node, "needs attribute 'shape' (the reduced input's shape)");
  Shape x = node.attr_ints("shape");
  RN_ASSIGN_OR_RETURN(Shape b, rules::broadcast(node, dy, x));
  if (dy.size() != x.size() || b != x)
    return node_error(node, "dY ", shape_str(dy), " does not broadcast to ", shape_str(x), " at the same rank");
  set_out(graph, node, 0, dtype, x);
  return ok_status();
}

// ---------------------------------------------------------------- cost rules

// Elementwise ops with inputs: B/W split of the backward by whether an input is a
// trained parameter; `backward` FLOPs per output element per input that gets a gradient.
CostFn cost_binary(double forward, double backward) {
  return [forward, backward](const Node& node, const Graph& graph) {
    OpCost c = rules::cost_eltwise(forward, false)(node, graph);
    double n = rules::has_output(node, 0) ? rules::value_numel(graph, node.outputs[0]) : 0;
    for (const std::string& in : node.inputs) {
      if (in.empty() || (graph.initializers.count(in) && !graph.parameters.count(in))) continue;
      (graph.parameters.count(in) ? c.backward_weight_flops : c.backward_input_flops) += backward * n;
    }
    return c;
  };
}

// ReduceSum/ReduceMean: one add per input element; backward broadcasts dY back.
OpCost cost_reduction(const Node& node, const Graph& graph) {
  OpCost c = rules::cost_reduce(node, graph);
  c.backward_input_flops = rules::has_input(node, 0) ? rules::value_numel(graph, node.inputs[0]) : 0;
  return c;
}

// ---------------------------------------------------------------- fold rules

// Row-major strides of `shape` right-aligned to `rank`, 0 on broadcast dims.
std::vector<int64_t> aligned_strides(const Shape& shape, const Shape& out) {
  std::vector<int64_t> strides(out.size(), 0);
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    size_t o = out.size() - shape.size() + i;
    strides[o] = shape[i] == 1 ? 0 : stride;
    stride *= shape[i];
  }
  return strides;
}

void store(TensorData& t, int64_t i, double v) {
  switch (t.dtype) {
    case DType::kF32: t.data<float>()[i] = static_cast<float>(v); break;
    case DType::kF64: t.data<double>()[i] = v; break;
    case DType::kBool: t.data<uint8_t>()[i] = v != 0; break;
    case DType::kI64: t.data<int64_t>()[i] = static_cast<int64_t>(v); break;
    case DType::kI32: t.data<int32_t>()[i] = static_cast<int32_t>(v); break;
    default: break;  // excluded by fold_math's dtype check
  }
}

double apply_unary(const std::string& op, double x) {
  if (op == "Sigmoid") return 1 / (1 + std::exp(-x));
  if (op == "Tanh") return std::tanh(x);
  if (op == "Erf") return std::erf(x);
  if (op == "Sqrt") return std::sqrt(x);
  if (op == "Neg") return -x;
  if (op == "Exp") return std::exp(x);
  if (op == "Log") return std::log(x);
  if (op == "Sin") return std::sin(x);
  if (op == "Cos") return std::cos(x);
  return 1 / x;  // Reciprocal
}

// Unary ops, Pow, Equal and Where over constant inputs, evaluated in float64.
Result<std::vector<TensorData>> fold_math(const Node& node, const Graph& graph) {
  const ValueInfo* info = graph.find_value(node.outputs[0]);
  if (!info || !info->is_static()) return node_error(node, "output has no static type to fold into");
  TensorData out;
  out.dtype = info->dtype;
  out.shape = info->static_shape();
  const DType kFoldable[] = {DType::kF32, DType::kF64, DType::kBool, DType::kI64, DType::kI32};
  if (std::find(std::begin(kFoldable), std::end(kFoldable), out.dtype) == std::end(kFoldable))
    return node_error(node, "cannot fold an output of type ", dtype_name(out.dtype));
  out.bytes.assign(static_cast<size_t>(out.numel()) * dtype_size(out.dtype), 0);
  std::vector<std::vector<double>> in;
  std::vector<std::vector<int64_t>> strides;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    const TensorData& t = graph.initializers.at(node.inputs[i]);
    in.push_back(t.as_doubles());
    strides.push_back(aligned_strides(t.shape, out.shape));
  }
  const Shape& shape = out.shape;
  std::vector<int64_t> index(shape.size(), 0);
  for (int64_t flat = 0; flat < out.numel(); ++flat) {
    double v[3] = {0, 0, 0};
    for (size_t k = 0; k < in.size() && k < 3; ++k) {
      int64_t off = 0;
      for (size_t d = 0; d < shape.size(); ++d) off += index[d] * strides[k][d];
      v[k] = in[k][static_cast<size_t>(off)];
    }
    double r;
    if (node.op == "Pow") r = std::pow(v[0], v[1]);
    else if (node.op == "Equal") r = v[0] == v[1];
    else if (node.op == "Where") r = v[0] != 0 ? v[1] : v[2];
    else r = apply_unary(node.op, v[0]);
    store(out, flat, r);
    for (size_t d = shape.size(); d-- > 0;) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
  return std::vector<TensorData>{std::move(out)};
}

// ---------------------------------------------------------------- gradient rules

// Emits `op(inputs)` (of `target`'s dtype, at `shape`) towards the gradient of `target`; returns its output.
std::string emit_op(GradBuilder& b, const std::string& name, const std::string& op, std::vector<std::string> inputs,
                    const Shape& shape, const std::string& target, const std::string& domain = "") {
  std::string out = b.new_value("d/" + target, b.info(target).dtype, shape);
  b.emit(make_node(name, op, std::move(inputs), {out}, domain), target);
  return out;
}

Shape shape_of(GradBuilder& b, const std::string& value) { return b.info(value).static_shape(); }

// Contributes `full` (at the output's shape) to input i, summed to input i's shape.
void give(GradBuilder& b, const Node& node, size_t i, const std::string& full) {
  const std::string& x = input(node, i);
  b.contribute(x, b.reduce_to_shape(full, shape_of(b, x), x));
}

// Unary ops whose gradient is one fused ai.ravnest op reading X or Y.
struct UnaryGrad {
  const char* op;
  const char* grad_op;  // reads (dY, X) or (dY, Y)
  bool from_output;
};
constexpr UnaryGrad kUnaryGrads[] = {
    {"Sigmoid", "SigmoidGrad", true}, {"Tanh", "TanhGrad", true},  {"Sqrt", "SqrtGrad", true},
    {"Reciprocal", "ReciprocalGrad", true}, {"Erf", "ErfGrad", false}, {"Sin", "SinGrad", false},
    {"Cos", "CosGrad", false},
};

Status grad_unary(const Node& node, GradBuilder& b) {
  if (!wants(b, node, 0)) return ok_status();
  const std::string& x = input(node, 0);
  const std::string dy = b.grad(node.outputs[0]);
  const std::string name = node.name + "/grad";
  const Shape shape = shape_of(b, x);
  std::string dx;
  if (node.op == "Neg") dx = emit_op(b, name, "Neg", {dy}, shape, x);
  else if (node.op == "Exp") dx = emit_op(b, name, "Mul", {dy, node.outputs[0]}, shape, x);
  else if (node.op == "Log") dx = emit_op(b, name, "Div", {dy, x}, shape, x);
  for (const UnaryGrad& g : kUnaryGrads)
    if (node.op == g.op) dx = emit_op(b, name, g.grad_op, {dy, g.from_output ? node.outputs[0] : x}, shape, x, kRavnestDomain);
  if (dx.empty()) return error(Code::kInternal, "no unary gradient for ", node.op);
  b.contribute(x, dx);
  return ok_status();
}

// Add, Sub, Mul, Div, Pow with numpy broadcasting.
Status grad_binary(const Node& node, GradBuilder& b) {
  const std::string dy = b.grad(node.outputs[0]);
  const std::string& a = input(node, 0);
  const std::string& e = input(node, 1);
  const std::string& y = node.outputs[0];
  const Shape full = shape_of(b, dy);
  const std::string name = node.name + "/grad";
  // d(input 1) = -reduce(t): the negation runs on the reduced (smaller) tensor.
  auto give_negated = [&](const std::string& t) {
    std::string reduced = b.reduce_to_shape(t, shape_of(b, e), e);
    b.contribute(e, emit_op(b, name + "_b/neg", "Neg", {reduced}, shape_of(b, e), e));
  };
  const std::string& op = node.op;
  if (wants(b, node, 0)) {
    if (op == "Add" || op == "Sub") give(b, node, 0, dy);
    else if (op == "Mul") give(b, node, 0, emit_op(b, name + "_a", "Mul", {dy, e}, full, a));
    else if (op == "Div") give(b, node, 0, emit_op(b, name + "_a", "Div", {dy, e}, full, a));
    else give(b, node, 0, emit_op(b, name + "_a", "PowGrad", {dy, a, e}, full, a, kRavnestDomain));
  }
  if (wants(b, node, 1)) {
    if (op == "Add") {
      give(b, node, 1, dy);
    } else if (op == "Sub") {
      give_negated(dy);
    } else if (op == "Mul") {
      give(b, node, 1, emit_op(b, name + "_b", "Mul", {dy, a}, full, e));
    } else if (op == "Div") {  // dB = -dY * Y / B
      std::string t = emit_op(b, name + "_b/mul", "Mul", {dy, y}, full, e);
      give_negated(emit_op(b, name + "_b/div", "Div", {t, e}, full, e));
    } else {  // Pow: dE = dY * Y * log(X)
      if (!rules::is_float(b.info(e).dtype))
        return error(Code::kInvalidArgument, "Pow's exponent '", e, "' is ", dtype_name(b.info(e).dtype),
                     " and cannot take a gradient; make it a constant or a float tensor");
      std::string log_x = emit_op(b, name + "_b/log", "Log", {a}, shape_of(b, a), e);
      std::string t = emit_op(b, name + "_b/mul", "Mul", {dy, y}, full, e);
      give(b, node, 1, emit_op(b, name + "_b/mul_log", "Mul", {t, log_x}, full, e));
    }
  }
  return ok_status();
}

// Where(C, X, Y): dX = Where(C, dY, 0), dY = Where(C, 0, dY), each summed to its input's shape.
Status grad_where(const Node& node, GradBuilder& b) {
  const std::string dy = b.grad(node.outputs[0]);
  const Shape full = shape_of(b, dy);
  const std::string& cond = input(node, 0);
  std::string zero;
  for (size_t i = 1; i <= 2; ++i) {
    if (!wants(b, node, i)) continue;
    if (zero.empty()) {
      TensorData z = TensorData::from_floats({0.0f}, {});
      if (b.info(dy).dtype != DType::kF32) return error(Code::kUnsupported, "Where gradient is float32 only");
      zero = b.constant("zero", std::move(z));
    }
    std::vector<std::string> ins = i == 1 ? std::vector<std::string>{cond, dy, zero} : std::vector<std::string>{cond, zero, dy};
    give(b, node, i, emit_op(b, node.name + "/grad_" + std::to_string(i), "Where", std::move(ins), full, input(node, i)));
  }
  return ok_status();
}

Status grad_softmax(const Node& node, GradBuilder& b) {
  if (!wants(b, node, 0)) return ok_status();
  const std::string& x = input(node, 0);
  std::string dx = grad_value(b, x);
  Node n = make_node(node.name + "/grad", "SoftmaxGrad", {b.grad(node.outputs[0]), node.outputs[0]}, {dx}, kRavnestDomain);
  n.attrs["axis"] = node.attr_int("axis", -1);
  b.emit(std::move(n), x);
  b.contribute(x, dx);
  return ok_status();
}

// ReduceSum / ReduceMean: dX = scale * broadcast(dY with the reduced axes kept as 1).
Status grad_reduce(const Node& node, GradBuilder& b) {
  if (!wants(b, node, 0)) return ok_status();
  const std::string& x = input(node, 0);
  const Shape xs = shape_of(b, x);
  bool present = false;
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, rules::axes_of(node, b.forward(), 1, &present));
  const int64_t rank = static_cast<int64_t>(xs.size());
  std::vector<bool> reduce(xs.size(), axes.empty() && node.attr_int("noop_with_empty_axes", 0) == 0);
  for (int64_t a : axes) {
    RN_ASSIGN_OR_RETURN(int64_t axis, rules::norm_axis(node, a, rank));
    reduce[static_cast<size_t>(axis)] = true;
  }
  Shape kept = xs;
  int64_t count = 1;
  for (size_t i = 0; i < xs.size(); ++i)
    if (reduce[i]) {
      count *= xs[i];
      kept[i] = 1;
    }
  std::string dy = b.grad(node.outputs[0]);
  if (shape_of(b, dy) != kept) {  // keepdims=0: put the reduced axes back (a Reshape aliases, free)
    std::string target = b.constant("shape", TensorData::from_ints(kept, {static_cast<int64_t>(kept.size())}));
    dy = emit_op(b, node.name + "/grad_keepdims", "Reshape", {dy, target}, kept, x);
  }
  std::string dx = grad_value(b, x);
  Node n = make_node(node.name + "/grad", "ReduceGrad", {dy}, {dx}, kRavnestDomain);
  n.attrs["shape"] = xs;
  n.attrs["scale"] = node.op == "ReduceMean" && count > 0 ? 1.0f / static_cast<float>(count) : 1.0f;
  b.emit(std::move(n), x);
  b.contribute(x, dx);
  return ok_status();
}

}  // namespace

std::vector<OpDef> math_ops() {
  std::vector<OpDef> t;
  // Unary: FLOPs per element approximate a vectorised libm (sigmoid/tanh/erf ~ exp + a few).
  const std::pair<const char*, double> unary[] = {{"Sigmoid", 4}, {"Tanh", 6}, {"Erf", 8}, {"Sqrt", 1}, {"Neg", 1},
                                                  {"Exp", 4},     {"Log", 4},  {"Sin", 8}, {"Cos", 8},  {"Reciprocal", 1}};
  for (const auto& [op, flops] : unary) {
    ShapeFn shape = std::string(op) == "Neg" ? ShapeFn(rules::shape_same) : ShapeFn(shape_unary_float);
    t.push_back(with_fold(with_grad(op_row(op, shape, rules::cost_eltwise(flops)), grad_unary), fold_math));
  }
  for (const char* op : {"Add", "Sub", "Mul", "Div"})
    t.push_back(with_fold(with_grad(op_row(op, rules::shape_broadcast, cost_binary(1, 1)), grad_binary), rules::fold_binary));
  t.push_back(with_fold(with_grad(op_row("Pow", shape_pow, cost_binary(8, 10)), grad_binary), fold_math));
  t.push_back(with_fold(op_row("Equal", shape_equal, rules::cost_eltwise(1, false)), fold_math));
  t.push_back(with_fold(with_grad(op_row("Where", shape_where, cost_binary(1, 1)), grad_where), fold_math));
  for (const char* op : {"ReduceSum", "ReduceMean"})
    t.push_back(with_grad(op_row(op, rules::shape_reduce_sum, cost_reduction), grad_reduce));
  t.push_back(with_grad(op_row("Softmax", shape_softmax, rules::cost_eltwise(5)), grad_softmax));

  // ai.ravnest gradient ops (docs/training-ops.md, "Math").
  for (const UnaryGrad& g : kUnaryGrads) t.push_back(ravnest_op_row(g.grad_op, rules::shape_relu_grad, rules::cost_eltwise(3, false)));
  t.push_back(ravnest_op_row("PowGrad", shape_pow_grad, rules::cost_eltwise(10, false)));
  t.push_back(ravnest_op_row("SoftmaxGrad", shape_softmax_grad, rules::cost_eltwise(4, false)));
  t.push_back(ravnest_op_row("ReduceGrad", shape_reduce_grad, rules::cost_eltwise(1, false)));
  return t;
}

}  // namespace ravnest::fe
