// Cases and float64 references for the core ops of frontend/op_table.cc: Conv,
// Relu, MaxPool, Gemm, MatMul, Sum, Reshape, Flatten, Identity and
// SoftmaxCrossEntropyLoss, and Add's reference (its cases are math_cases.cc's). Other families
// register theirs in <family>_cases.cc.
//
// Guarantees: each reference follows the ONNX definition of its op (opset 17) in
// float64, built on tests/runtime/reference_ops.h where it has the loop; cases span
// several geometries each, including broadcasting and odd sizes.
#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "tests/ops/harness.h"
#include "tests/runtime/reference_ops.h"

namespace ravnest::ops_test {
namespace {

namespace ref = rt::ref;
using Ints = std::vector<int64_t>;

InputSpec act(std::string name, Shape shape) { return InputSpec{std::move(name), std::move(shape)}; }
InputSpec param(std::string name, Shape shape) {
  return InputSpec{std::move(name), std::move(shape), Role::kParameter};
}
InputSpec omitted() { return InputSpec{"", {}, Role::kConstant}; }
InputSpec int_const(std::string name, Ints values) {
  Vec v(values.begin(), values.end());
  return InputSpec{std::move(name), {static_cast<int64_t>(values.size())}, Role::kConstant, DType::kI64, fixed(v)};
}
InputSpec labels(std::string name, Shape shape, int64_t lo, int64_t hi) {
  return InputSpec{std::move(name), std::move(shape), Role::kData, DType::kI64, integers(lo, hi)};
}

RefTensor f32(Shape shape, Vec data) { return RefTensor{DType::kF32, std::move(shape), std::move(data)}; }

// numpy broadcast of two shapes (the reference trusts the case to be valid).
Result<Shape> broadcast(const Shape& a, const Shape& b, const Node& node) {
  Shape out(std::max(a.size(), b.size()), 1);
  for (size_t i = 0; i < out.size(); ++i) {
    const int64_t da = i < out.size() - a.size() ? 1 : a[i - (out.size() - a.size())];
    const int64_t db = i < out.size() - b.size() ? 1 : b[i - (out.size() - b.size())];
    if (da != db && da != 1 && db != 1)
      return error(Code::kInvalidArgument, node.describe(), ": shapes ", shape_str(a), " and ", shape_str(b),
                   " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// ---- Relu, Identity, Reshape, Flatten --------------------------------------

Result<std::vector<RefTensor>> relu_ref(const Node&, const std::vector<RefTensor>& in) {
  RefTensor y = in[0];
  for (double& v : y.data) v = v > 0 ? v : 0;
  return std::vector<RefTensor>{y};
}

Result<std::vector<RefTensor>> identity_ref(const Node&, const std::vector<RefTensor>& in) {
  return std::vector<RefTensor>{in[0]};
}

Result<std::vector<RefTensor>> reshape_ref(const Node& node, const std::vector<RefTensor>& in) {
  const Shape& xs = in[0].shape;
  Shape ys;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < in[1].data.size(); ++i) {
    int64_t d = static_cast<int64_t>(in[1].data[i]);
    if (d == 0 && node.attr_int("allowzero", 0) == 0) d = xs.at(i);
    if (d == -1) infer = static_cast<int64_t>(i);
    else known *= d;
    ys.push_back(d);
  }
  if (infer >= 0) ys[static_cast<size_t>(infer)] = numel(xs) / known;
  if (numel(ys) != numel(xs))
    return error(Code::kInvalidArgument, node.describe(), ": cannot reshape ", shape_str(xs), " to ", shape_str(ys));
  return std::vector<RefTensor>{f32(ys, in[0].data)};
}

Result<std::vector<RefTensor>> flatten_ref(const Node& node, const std::vector<RefTensor>& in) {
  const Shape& xs = in[0].shape;
  int64_t axis = node.attr_int("axis", 1);
  if (axis < 0) axis += static_cast<int64_t>(xs.size());
  int64_t outer = 1, inner = 1;
  for (size_t i = 0; i < xs.size(); ++i) (static_cast<int64_t>(i) < axis ? outer : inner) *= xs[i];
  return std::vector<RefTensor>{f32({outer, inner}, in[0].data)};
}

// ---- Conv, MaxPool ---------------------------------------------------------

Result<std::vector<RefTensor>> conv_ref(const Node& node, const std::vector<RefTensor>& in) {
  const Shape& xs = in[0].shape;
  const Shape& ws = in[1].shape;
  if (xs.size() != 4) return error(Code::kUnsupported, node.describe(), ": the reference handles 2-D convolutions");
  ref::ConvAttrs a;
  const Ints strides = node.attr_ints("strides", {1, 1}), dil = node.attr_ints("dilations", {1, 1});
  const Ints pads = node.attr_ints("pads", {0, 0, 0, 0});
  a.sh = strides[0], a.sw = strides[1], a.dh = dil[0], a.dw = dil[1];
  a.pt = pads[0], a.pl = pads[1], a.pb = pads[2], a.pr = pads[3];
  a.group = node.attr_int("group", 1);
  const bool has_bias = in.size() > 2 && in[2].dtype != DType::kUndefined;
  Vec y = ref::conv(in[0].data, xs, in[1].data, ws, has_bias ? &in[2].data : nullptr, a);
  return std::vector<RefTensor>{f32(ref::conv_out_shape(xs, ws, a), std::move(y))};
}

Result<std::vector<RefTensor>> maxpool_ref(const Node& node, const std::vector<RefTensor>& in) {
  const Shape& xs = in[0].shape;
  if (xs.size() != 4) return error(Code::kUnsupported, node.describe(), ": the reference handles 2-D pooling");
  ref::PoolAttrs a;
  const Ints k = node.attr_ints("kernel_shape"), s = node.attr_ints("strides", {1, 1});
  const Ints pads = node.attr_ints("pads", {0, 0, 0, 0});
  a.kh = k.at(0), a.kw = k.at(1), a.sh = s[0], a.sw = s[1];
  a.pt = pads[0], a.pl = pads[1], a.pb = pads[2], a.pr = pads[3];
  a.ceil_mode = node.attr_int("ceil_mode", 0) != 0;
  Vec indices;
  Vec y = ref::maxpool(in[0].data, xs, a, &indices);
  const Shape ys = ref::pool_out_shape(xs, a);
  std::vector<RefTensor> out{f32(ys, std::move(y))};
  if (node.outputs.size() > 1 && !node.outputs[1].empty()) out.push_back(RefTensor{DType::kI64, ys, std::move(indices)});
  return out;
}

// ---- Gemm, MatMul, Sum -----------------------------------------------------

Result<std::vector<RefTensor>> gemm_ref(const Node& node, const std::vector<RefTensor>& in) {
  const bool ta = node.attr_int("transA", 0) != 0, tb = node.attr_int("transB", 0) != 0;
  const bool has_c = in.size() > 2 && in[2].dtype != DType::kUndefined;
  Vec y = ref::gemm(in[0].data, in[0].shape, in[1].data, in[1].shape, has_c ? &in[2].data : nullptr,
                    has_c ? in[2].shape : Shape{}, ta, tb, node.attr_float("alpha", 1.0f), node.attr_float("beta", 1.0f));
  const int64_t m = ta ? in[0].shape[1] : in[0].shape[0], n = tb ? in[1].shape[0] : in[1].shape[1];
  return std::vector<RefTensor>{f32({m, n}, std::move(y))};
}

Result<std::vector<RefTensor>> matmul_ref(const Node& node, const std::vector<RefTensor>& in) {
  // 1-D operands: promoted to matrices, the added dim removed from the result (numpy).
  Shape as = in[0].shape, bs = in[1].shape;
  const bool a_vec = as.size() == 1, b_vec = bs.size() == 1;
  if (a_vec) as = {1, as[0]};
  if (b_vec) bs = {bs[0], 1};
  RN_ASSIGN_OR_RETURN(Shape batch, broadcast(Shape(as.begin(), as.end() - 2), Shape(bs.begin(), bs.end() - 2), node));
  Shape ys = batch;
  ys.push_back(as[as.size() - 2]);
  ys.push_back(bs.back());
  Vec y = ref::matmul(in[0].data, as, in[1].data, bs, ys);
  if (a_vec) ys.erase(ys.end() - 2);
  if (b_vec) ys.pop_back();
  return std::vector<RefTensor>{f32(ys, std::move(y))};
}

// Add's cases are math_cases.cc's; its reference lives here beside Sum's.
Result<std::vector<RefTensor>> add_ref(const Node& node, const std::vector<RefTensor>& in) {
  RN_ASSIGN_OR_RETURN(Shape ys, broadcast(in[0].shape, in[1].shape, node));
  return std::vector<RefTensor>{f32(ys, ref::add(in[0].data, in[0].shape, in[1].data, in[1].shape, ys))};
}

// Sum of any number of inputs, numpy-broadcast.
Result<std::vector<RefTensor>> sum_ref(const Node& node, const std::vector<RefTensor>& in) {
  Shape ys = in[0].shape;
  for (size_t i = 1; i < in.size(); ++i) {
    RN_ASSIGN_OR_RETURN(ys, broadcast(ys, in[i].shape, node));
  }
  Vec y(static_cast<size_t>(numel(ys)), 0.0);
  for (const RefTensor& t : in)
    for (int64_t j = 0; j < numel(ys); ++j) y[j] += t.data[ref::broadcast_index(t.shape, ys, j)];
  return std::vector<RefTensor>{f32(ys, std::move(y))};
}

// ---- SoftmaxCrossEntropyLoss -------------------------------------------------

Result<std::vector<RefTensor>> sce_ref(const Node& node, const std::vector<RefTensor>& in) {
  const Shape& ss = in[0].shape;
  if (ss.size() != 2 || (in.size() > 2 && in[2].dtype != DType::kUndefined))
    return error(Code::kUnsupported, node.describe(), ": the reference handles [N, C] scores without weights");
  const int64_t N = ss[0], C = ss[1];
  Ints labels(in[1].data.begin(), in[1].data.end());
  const bool has_ignore = node.has_attr("ignore_index");
  const int64_t ignore = node.attr_int("ignore_index", 0);
  for (int64_t n = 0; n < N; ++n)
    if (!(has_ignore && labels[n] == ignore) && (labels[n] < 0 || labels[n] >= C))
      return error(Code::kInvalidArgument, node.describe(), ": label ", labels[n], " is outside [0, ", C, ")");
  ref::SceResult r = ref::softmax_cross_entropy(in[0].data, N, C, labels, has_ignore, ignore);
  const std::string reduction = node.attr_string("reduction", "mean");
  RefTensor loss;
  if (reduction == "none") {
    loss = f32({N}, r.per_sample);
  } else {
    double sum = 0;
    for (double v : r.per_sample) sum += v;
    // ONNX divides by the count of samples not ignored; Ravnest gives 0 when none count.
    if (reduction == "mean") sum = r.counted ? sum / static_cast<double>(r.counted) : 0.0;
    loss = f32({}, {sum});
  }
  std::vector<RefTensor> out{loss};
  if (node.outputs.size() > 1 && !node.outputs[1].empty()) out.push_back(f32(ss, r.log_prob));
  return out;
}

// ---- cases -------------------------------------------------------------------

OpCase conv_case(std::string label, Shape x, Shape w, bool bias, Ints strides, Ints pads) {
  OpCase c{std::move(label),
           make_node("Conv", {"x", "w", bias ? "b" : ""}, {"y"},
                     {{"kernel_shape", Ints{w[2], w[3]}}, {"strides", strides}, {"pads", pads}}),
           {act("x", x), param("w", w), bias ? param("b", {w[0]}) : omitted()}};
  return c;
}

OpCase pool_case(std::string label, Shape x, Ints kernel, Ints strides, Ints pads, int64_t ceil_mode) {
  return OpCase{std::move(label),
                make_node("MaxPool", {"x"}, {"y"},
                          {{"kernel_shape", kernel}, {"strides", strides}, {"pads", pads}, {"ceil_mode", ceil_mode}}),
                {act("x", x)}};
}

OpCase gemm_case(std::string label, Shape a, Shape b, std::optional<Shape> c_shape, int64_t ta, int64_t tb,
                 float alpha, float beta) {
  std::map<std::string, AttrValue> attrs{{"transA", ta}, {"transB", tb}, {"alpha", alpha}, {"beta", beta}};
  return OpCase{std::move(label), make_node("Gemm", {"a", "b", c_shape ? "c" : ""}, {"y"}, attrs),
                {act("a", a), param("b", b), c_shape ? param("c", *c_shape) : omitted()}};
}

OpCase binary_case(std::string op, std::string label, InputSpec a, InputSpec b) {
  return OpCase{std::move(label), make_node(std::move(op), {a.name, b.name}, {"y"}), {std::move(a), std::move(b)}};
}

OpCase sce_case(std::string label, int64_t n, int64_t c, std::map<std::string, AttrValue> attrs, bool log_prob = false,
                int64_t lo = 0) {
  std::vector<std::string> outputs{"loss"};
  if (log_prob) outputs.push_back("log_prob");
  return OpCase{std::move(label), make_node("SoftmaxCrossEntropyLoss", {"scores", "labels"}, outputs, std::move(attrs)),
                {InputSpec{"scores", {n, c}, Role::kActivation, DType::kF32, uniform(-2, 2)},
                 labels("labels", {n}, lo, c - 1)}};
}

std::vector<OpCase> core_cases() {
  std::vector<OpCase> cases;
  auto add = [&](OpCase c) { cases.push_back(std::move(c)); };

  add(OpCase{"Relu/4d", make_node("Relu", {"x"}, {"y"}), {act("x", {2, 3, 4, 5})}});
  add(OpCase{"Relu/odd_1d", make_node("Relu", {"x"}, {"y"}), {act("x", {7})}});
  add(OpCase{"Relu/of_parameter", make_node("Relu", {"x"}, {"y"}), {param("x", {3, 5})}});

  add(OpCase{"Identity/2d", make_node("Identity", {"x"}, {"y"}), {act("x", {3, 5})}});
  add(OpCase{"Identity/scalar", make_node("Identity", {"x"}, {"y"}), {act("x", {})}});

  add(OpCase{"Reshape/infer_last", make_node("Reshape", {"x", "shape"}, {"y"}),
             {act("x", {2, 3, 4}), int_const("shape", {4, -1})}});
  add(OpCase{"Reshape/copy_dim_zero", make_node("Reshape", {"x", "shape"}, {"y"}),
             {act("x", {2, 3, 4}), int_const("shape", {0, 12})}});
  add(OpCase{"Reshape/to_rank4", make_node("Reshape", {"x", "shape"}, {"y"}),
             {act("x", {6, 5}), int_const("shape", {3, 1, 2, 5})}});

  add(OpCase{"Flatten/default_axis", make_node("Flatten", {"x"}, {"y"}), {act("x", {2, 3, 4, 5})}});
  add(OpCase{"Flatten/axis0", make_node("Flatten", {"x"}, {"y"}, {{"axis", int64_t{0}}}), {act("x", {2, 3, 4})}});
  add(OpCase{"Flatten/axis2", make_node("Flatten", {"x"}, {"y"}, {{"axis", int64_t{2}}}), {act("x", {2, 3, 4, 5})}});
  add(OpCase{"Flatten/axis_neg1", make_node("Flatten", {"x"}, {"y"}, {{"axis", int64_t{-1}}}), {act("x", {3, 2, 5})}});

  add(conv_case("Conv/3x3_pad1_bias", {2, 3, 7, 7}, {4, 3, 3, 3}, true, {1, 1}, {1, 1, 1, 1}));
  add(conv_case("Conv/stride2_no_bias_odd", {1, 2, 9, 8}, {3, 2, 3, 2}, false, {2, 2}, {0, 0, 0, 0}));
  add(conv_case("Conv/asymmetric_pads_strides", {2, 2, 6, 7}, {3, 2, 3, 3}, true, {2, 1}, {1, 0, 2, 1}));
  add(conv_case("Conv/1x1", {2, 5, 4, 3}, {2, 5, 1, 1}, true, {1, 1}, {0, 0, 0, 0}));
  add(conv_case("Conv/5x5_stride3_pad2", {1, 1, 11, 10}, {2, 1, 5, 5}, false, {3, 3}, {2, 2, 2, 2}));

  add(pool_case("MaxPool/2x2_stride2", {2, 3, 6, 6}, {2, 2}, {2, 2}, {0, 0, 0, 0}, 0));
  add(pool_case("MaxPool/3x3_stride2_pad1_odd", {1, 2, 7, 7}, {3, 3}, {2, 2}, {1, 1, 1, 1}, 0));
  add(pool_case("MaxPool/overlapping_stride1", {1, 2, 5, 4}, {2, 2}, {1, 1}, {0, 0, 0, 0}, 0));
  add(pool_case("MaxPool/ceil_mode", {1, 1, 5, 5}, {2, 2}, {2, 2}, {0, 0, 0, 0}, 1));

  add(gemm_case("Gemm/plain", {3, 4}, {4, 5}, std::nullopt, 0, 0, 1.0f, 1.0f));
  add(gemm_case("Gemm/transB_bias_row", {3, 4}, {5, 4}, Shape{5}, 0, 1, 1.0f, 1.0f));
  add(gemm_case("Gemm/transA_bias_1xN", {4, 3}, {4, 5}, Shape{1, 5}, 1, 0, 1.0f, 1.0f));
  add(gemm_case("Gemm/transA_transB_alpha", {4, 3}, {5, 4}, Shape{3, 5}, 1, 1, 0.5f, 1.0f));
  // beta != 1: the gradient rule supports it for a constant C only.
  OpCase beta = gemm_case("Gemm/beta_constant_c", {3, 4}, {4, 5}, Shape{5}, 0, 0, 1.0f, 2.0f);
  beta.inputs[2].role = Role::kConstant;
  add(beta);
  add(gemm_case("Gemm/bias_column", {3, 4}, {4, 5}, Shape{3, 1}, 0, 0, 1.5f, 1.0f));
  add(gemm_case("Gemm/odd_linear", {7, 9}, {11, 9}, Shape{11}, 0, 1, 1.0f, 1.0f));

  add(binary_case("MatMul", "MatMul/2d", act("a", {3, 4}), act("b", {4, 5})));
  add(binary_case("MatMul", "MatMul/batched", act("a", {2, 3, 4}), act("b", {2, 4, 5})));
  add(binary_case("MatMul", "MatMul/broadcast_batch", act("a", {2, 1, 3, 4}), act("b", {3, 4, 5})));
  add(binary_case("MatMul", "MatMul/rank3_x_rank2_weight", act("a", {2, 3, 4}), param("b", {4, 5})));
  add(binary_case("MatMul", "MatMul/rank2_x_rank3", act("a", {3, 4}), act("b", {2, 4, 5})));
  // 1-D operands: forward only (the gradient rule needs rank >= 2).
  for (OpCase c : {binary_case("MatMul", "MatMul/vector_x_matrix", act("a", {4}), act("b", {4, 3})),
                   binary_case("MatMul", "MatMul/matrix_x_vector", act("a", {2, 3, 4}), act("b", {4}))}) {
    c.check_gradients = false;
    add(c);
  }

  // One value read by both inputs: the harness must move both slots together.
  add(binary_case("MatMul", "MatMul/same_value_twice", act("a", {3, 3}), act("a", {3, 3})));

  // Sum has no gradient rule, and its kernel sums same-shape inputs only.
  add(OpCase{"Sum/three_inputs", make_node("Sum", {"a", "b", "c"}, {"y"}),
             {act("a", {2, 3, 4}), act("b", {2, 3, 4}), act("c", {2, 3, 4})}, 17, 1e-4, 1e-6, /*check_gradients=*/false});
  add(OpCase{"Sum/single_input", make_node("Sum", {"a"}, {"y"}), {act("a", {5, 2})}, 17, 1e-4, 1e-6, false});

  add(sce_case("SoftmaxCrossEntropyLoss/mean", 5, 4, {}));
  add(sce_case("SoftmaxCrossEntropyLoss/sum", 6, 3, {{"reduction", std::string("sum")}}));
  add(sce_case("SoftmaxCrossEntropyLoss/none", 4, 7, {{"reduction", std::string("none")}}));
  add(sce_case("SoftmaxCrossEntropyLoss/ignore_index_mean", 8, 4, {{"ignore_index", int64_t{-1}}}, false, -1));
  OpCase ignore = sce_case("SoftmaxCrossEntropyLoss/ignore_index_sum", 8, 4,
                           {{"reduction", std::string("sum")}, {"ignore_index", int64_t{2}}});
  add(ignore);
  // The optional log_prob output: forward only (its gradient is not a rule of the op).
  OpCase with_log_prob = sce_case("SoftmaxCrossEntropyLoss/log_prob_output", 3, 5, {}, true);
  with_log_prob.check_gradients = false;
  add(with_log_prob);
  return cases;
}

const bool kRegistered = register_reference("Relu", relu_ref) && register_reference("Identity", identity_ref) &&
                         register_reference("Reshape", reshape_ref) && register_reference("Flatten", flatten_ref) &&
                         register_reference("Conv", conv_ref) && register_reference("MaxPool", maxpool_ref) &&
                         register_reference("Gemm", gemm_ref) && register_reference("MatMul", matmul_ref) &&
                         register_reference("Add", add_ref) && register_reference("Sum", sum_ref) &&
                         register_reference("SoftmaxCrossEntropyLoss", sce_ref) && register_cases(core_cases());

}  // namespace
}  // namespace ravnest::ops_test
