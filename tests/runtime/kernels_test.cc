// One per-op harness for the CPU kernels: every case builds its kernel through
// KernelRegistry::global(), runs it on random inputs and compares each output
// with a float64 reference: the naive forward of reference_ops.h for forward ops,
// central finite differences of that forward for gradient ops.
//
// Tolerance (kTol): inputs are uniform in [-1, 1] and the longest reduction has
// K <= ~250 terms, so float32 rounding leaves errors around u*sqrt(K)*|terms| ~ 1e-5
// of the output scale. We accept |got - want| <= 1e-4 * max(1, max|want|): a 10x
// margin over rounding, while a wrong index, pad, stride or transposition moves
// outputs by O(0.1) of the scale. Finite differences are exact for the linear
// gradient ops (Conv, pooling scatter, Relu away from 0) up to double rounding
// (~1e-12 with eps 1e-3) and O(eps^2) = 1e-10 for the softmax loss (eps 1e-5).
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <numeric>
#include <random>

#include "common/log.h"
#include "runtime/kernel.h"
#include "tests/runtime/reference_ops.h"

namespace ravnest::rt {
namespace {

using ref::Vec;
constexpr double kTol = 1e-4;

Tensor f32_tensor(const Shape& shape, const Vec& values) {
  Tensor t = Tensor::empty(DType::kF32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(values[i]);
  return t;
}

Tensor i64_tensor(const Shape& shape, const std::vector<int64_t>& values) {
  Tensor t = Tensor::empty(DType::kI64, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int64_t>()[i] = values[i];
  return t;
}

Vec to_vec(const Tensor& t) {
  Vec v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i)
    v[i] = t.dtype() == DType::kI64 ? static_cast<double>(t.data<int64_t>()[i]) : t.data<float>()[i];
  return v;
}

// Uniform values in [lo, hi], rounded to float so the reference sees what the kernel sees.
Vec uniform(std::mt19937& rng, const Shape& shape, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(static_cast<size_t>(numel(shape)));
  for (double& x : v) x = static_cast<float>(dist(rng));
  return v;
}

// Distinct values 0.01 apart in random order: max-pooling has no near-ties.
Vec distinct(std::mt19937& rng, const Shape& shape) {
  Vec v(static_cast<size_t>(numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(0.01 * (static_cast<double>(i) - v.size() / 2.0));
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

// What one case gives the harness: inputs (undefined = omitted), output types
// (empty name = omitted) and the expected values of the present outputs.
struct Prepared {
  std::vector<Tensor> inputs;
  std::vector<ValueInfo> outputs;
  std::vector<Vec> expected;
};

struct OpCase {
  std::string label;
  Node node;
  std::function<Prepared(std::mt19937&)> prepare;
};

ValueInfo f32_out(const Shape& shape, const std::string& name = "y") { return ValueInfo::of(name, DType::kF32, shape); }

Node make_node(const std::string& op, const std::string& domain = "") {
  Node node;
  node.name = "n_" + op;
  node.op = op;
  node.domain = domain;
  return node;
}

// Builds the kernel for `node` from the prepared types, runs it and returns the outputs.
std::vector<Tensor> run_kernel(const Node& base, const Prepared& p, std::string* impl = nullptr) {
  Node node = base;
  KernelRequest request;
  request.node = &node;
  node.inputs.clear();
  node.outputs.clear();
  for (size_t i = 0; i < p.inputs.size(); ++i) {
    const Tensor& t = p.inputs[i];
    const bool present = t.dtype() != DType::kUndefined;
    node.inputs.push_back(present ? "in" + std::to_string(i) : "");
    request.inputs.push_back(present ? ValueInfo::of(node.inputs.back(), t.dtype(), t.shape()) : ValueInfo{});
  }
  for (const ValueInfo& out : p.outputs) {
    node.outputs.push_back(out.name);
    request.outputs.push_back(out);
  }
  Result<std::unique_ptr<Kernel>> kernel = KernelRegistry::global().build(request, impl);
  EXPECT_TRUE(kernel.ok()) << kernel.status().to_string();
  if (!kernel.ok()) return {};
  std::vector<Tensor> inputs = p.inputs, outputs;
  std::vector<Tensor*> in_ptrs, out_ptrs;
  for (Tensor& t : inputs) in_ptrs.push_back(t.dtype() == DType::kUndefined ? nullptr : &t);
  for (const ValueInfo& out : p.outputs)
    outputs.push_back(out.name.empty() ? Tensor() : Tensor::empty(out.dtype, out.static_shape()));
  for (Tensor& t : outputs) out_ptrs.push_back(t.dtype() == DType::kUndefined ? nullptr : &t);
  Status status = (*kernel)->run(in_ptrs, out_ptrs);
  EXPECT_TRUE(status.ok()) << status.to_string();
  return outputs;
}

void check_case(const OpCase& c, uint32_t seed) {
  SCOPED_TRACE(c.label);
  std::mt19937 rng(seed);
  const Prepared p = c.prepare(rng);
  const std::vector<Tensor> outs = run_kernel(c.node, p);
  ASSERT_EQ(outs.size(), p.outputs.size());
  size_t next_expected = 0;
  for (size_t o = 0; o < outs.size(); ++o) {
    if (p.outputs[o].name.empty()) continue;
    ASSERT_LT(next_expected, p.expected.size());
    const Vec& want = p.expected[next_expected++];
    const Vec got = to_vec(outs[o]);
    ASSERT_EQ(got.size(), want.size()) << "output " << o;
    double scale = 1;
    for (double w : want) scale = std::max(scale, std::abs(w));
    int bad = 0;
    for (size_t i = 0; i < got.size() && bad < 5; ++i) {
      if (std::abs(got[i] - want[i]) > kTol * scale) {
        ++bad;
        ADD_FAILURE() << "output " << o << " element " << i << ": got " << got[i] << ", want " << want[i];
      }
    }
  }
}

// ---- Conv family -------------------------------------------------------------

struct ConvProblem {
  std::string label;
  Shape xs, ws;
  ref::ConvAttrs a;
  bool bias;
};

void set_conv_attrs(Node& node, const ConvProblem& p) {
  node.attrs["kernel_shape"] = std::vector<int64_t>{p.ws[2], p.ws[3]};
  node.attrs["strides"] = std::vector<int64_t>{p.a.sh, p.a.sw};
  node.attrs["pads"] = std::vector<int64_t>{p.a.pt, p.a.pl, p.a.pb, p.a.pr};
  node.attrs["dilations"] = std::vector<int64_t>{p.a.dh, p.a.dw};
  node.attrs["group"] = p.a.group;
}

std::vector<ConvProblem> conv_problems() {
  std::vector<ConvProblem> out;
  out.push_back({"3x3 pad1 bias", {2, 3, 7, 7}, {4, 3, 3, 3}, {1, 1, 1, 1, 1, 1, 1, 1, 1}, true});
  out.push_back({"stride2 asym pads", {1, 2, 9, 8}, {3, 2, 3, 3}, {2, 2, 1, 0, 2, 1, 1, 1, 1}, false});
  out.push_back({"dilation2", {1, 2, 9, 9}, {2, 2, 3, 3}, {1, 1, 2, 2, 2, 2, 2, 2, 1}, true});
  out.push_back({"groups2", {2, 4, 6, 5}, {6, 2, 3, 3}, {1, 1, 1, 1, 1, 1, 1, 1, 2}, true});
  out.push_back({"1x1", {3, 5, 5, 3}, {7, 5, 1, 1}, {}, true});
  out.push_back({"odd 2x4 stride3x2", {1, 3, 11, 7}, {2, 3, 2, 4}, {3, 2, 0, 1, 0, 1, 1, 1, 1}, false});
  return out;
}

std::vector<OpCase> conv_cases() {
  std::vector<OpCase> cases;
  for (const ConvProblem& p : conv_problems()) {
    const Shape ys = ref::conv_out_shape(p.xs, p.ws, p.a);
    Node fwd = make_node("Conv");
    set_conv_attrs(fwd, p);
    cases.push_back({"Conv " + p.label, fwd, [p, ys](std::mt19937& rng) {
                       Vec x = uniform(rng, p.xs), w = uniform(rng, p.ws), b = uniform(rng, {p.ws[0]});
                       Prepared out;
                       out.inputs = {f32_tensor(p.xs, x), f32_tensor(p.ws, w),
                                     p.bias ? f32_tensor({p.ws[0]}, b) : Tensor()};
                       out.outputs = {f32_out(ys)};
                       out.expected = {ref::conv(x, p.xs, w, p.ws, p.bias ? &b : nullptr, p.a)};
                       return out;
                     }});
    Node grad_in = make_node("ConvGradInput", kRavnestDomain);
    set_conv_attrs(grad_in, p);
    cases.push_back({"ConvGradInput " + p.label, grad_in, [p, ys](std::mt19937& rng) {
                       Vec dy = uniform(rng, ys), w = uniform(rng, p.ws), x = uniform(rng, p.xs);
                       auto objective = [&](const Vec& xv) { return ref::dot(dy, ref::conv(xv, p.xs, w, p.ws, nullptr, p.a)); };
                       Prepared out;
                       out.inputs = {f32_tensor(ys, dy), f32_tensor(p.ws, w)};
                       out.outputs = {f32_out(p.xs)};
                       out.expected = {ref::numeric_gradient(objective, x, 1e-3)};
                       return out;
                     }});
    Node grad_w = make_node("ConvGradWeight", kRavnestDomain);
    set_conv_attrs(grad_w, p);
    cases.push_back({"ConvGradWeight " + p.label, grad_w, [p, ys](std::mt19937& rng) {
                       Vec dy = uniform(rng, ys), x = uniform(rng, p.xs), w = uniform(rng, p.ws);
                       Vec b = uniform(rng, {p.ws[0]});
                       auto by_w = [&](const Vec& wv) { return ref::dot(dy, ref::conv(x, p.xs, wv, p.ws, &b, p.a)); };
                       auto by_b = [&](const Vec& bv) { return ref::dot(dy, ref::conv(x, p.xs, w, p.ws, &bv, p.a)); };
                       Prepared out;
                       out.inputs = {f32_tensor(ys, dy), f32_tensor(p.xs, x)};
                       out.outputs = {f32_out(p.ws, "dW"), p.bias ? f32_out({p.ws[0]}, "dB") : ValueInfo{}};
                       out.expected = {ref::numeric_gradient(by_w, w, 1e-3)};
                       if (p.bias) out.expected.push_back(ref::numeric_gradient(by_b, b, 1e-3));
                       return out;
                     }});
  }
  return cases;
}

// ---- Gemm / MatMul -----------------------------------------------------------

std::vector<OpCase> gemm_cases() {
  std::vector<OpCase> cases;
  const int64_t M = 5, K = 7, N = 3;
  const std::vector<std::pair<std::string, Shape>> c_shapes = {
      {"noC", {}}, {"C scalar", {}}, {"C [N]", {N}}, {"C [1,N]", {1, N}}, {"C [M,1]", {M, 1}}, {"C [M,N]", {M, N}}};
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (size_t ci = 0; ci < c_shapes.size(); ++ci) {
        Node node = make_node("Gemm");
        node.attrs["transA"] = int64_t{ta};
        node.attrs["transB"] = int64_t{tb};
        node.attrs["alpha"] = 0.5f;
        node.attrs["beta"] = 2.0f;
        const bool with_c = ci != 0;
        const Shape cs = c_shapes[ci].second;
        const Shape as = ta ? Shape{K, M} : Shape{M, K}, bs = tb ? Shape{N, K} : Shape{K, N};
        cases.push_back({"Gemm transA=" + std::to_string(ta) + " transB=" + std::to_string(tb) + " " +
                             c_shapes[ci].first,
                         node, [=](std::mt19937& rng) {
                           Vec a = uniform(rng, as), b = uniform(rng, bs), c = uniform(rng, cs);
                           Prepared out;
                           out.inputs = {f32_tensor(as, a), f32_tensor(bs, b)};
                           if (with_c) out.inputs.push_back(f32_tensor(cs, c));
                           out.outputs = {f32_out({M, N})};
                           out.expected = {ref::gemm(a, as, b, bs, with_c ? &c : nullptr, cs, ta, tb, 0.5, 2.0)};
                           return out;
                         }});
      }
  // A larger K than the block sizes of a naive tiling, to exercise the real GEMM path.
  Node big = make_node("Gemm");
  big.attrs["transB"] = int64_t{1};
  cases.push_back({"Gemm 33x250x17 transB", big, [](std::mt19937& rng) {
                     Vec a = uniform(rng, {33, 250}), b = uniform(rng, {17, 250}), c = uniform(rng, {17});
                     Prepared out;
                     out.inputs = {f32_tensor({33, 250}, a), f32_tensor({17, 250}, b), f32_tensor({17}, c)};
                     out.outputs = {f32_out({33, 17})};
                     out.expected = {ref::gemm(a, {33, 250}, b, {17, 250}, &c, {17}, false, true, 1.0, 1.0)};
                     return out;
                   }});

  struct MatMulProblem {
    std::string label;
    Shape as, bs, ys;
  };
  const std::vector<MatMulProblem> problems = {
      {"2-D", {5, 7}, {7, 3}, {5, 3}},
      {"batched A, 2-D B", {2, 3, 4, 5}, {5, 6}, {2, 3, 4, 6}},
      {"batch broadcast", {2, 1, 4, 5}, {3, 5, 6}, {2, 3, 4, 6}},
      {"same batch", {3, 2, 5}, {3, 5, 4}, {3, 2, 4}},
      {"1-D A", {4}, {4, 3}, {3}},
      {"1-D B", {3, 4, 5}, {5}, {3, 4}},
  };
  for (const MatMulProblem& p : problems) {
    cases.push_back({"MatMul " + p.label, make_node("MatMul"), [p](std::mt19937& rng) {
                       Vec a = uniform(rng, p.as), b = uniform(rng, p.bs);
                       // The reference takes rank >= 2: promote 1-D operands as numpy does.
                       Shape as = p.as, bs = p.bs, ys = p.ys;
                       if (as.size() == 1) as.insert(as.begin(), 1), ys.insert(ys.end() - 1, 1);
                       if (bs.size() == 1) bs.push_back(1), ys.push_back(1);
                       Prepared out;
                       out.inputs = {f32_tensor(p.as, a), f32_tensor(p.bs, b)};
                       out.outputs = {f32_out(p.ys)};
                       out.expected = {ref::matmul(a, as, b, bs, ys)};
                       return out;
                     }});
  }
  return cases;
}

// ---- Relu, MaxPool and their gradients ----------------------------------------

Vec relu(const Vec& x) {
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] > 0 ? x[i] : 0;
  return y;
}

// Values in [-1, -0.05] U [0.05, 1]: finite differences never straddle the kink.
Vec away_from_zero(std::mt19937& rng, const Shape& shape) {
  Vec v = uniform(rng, shape, 0.05, 1);
  std::bernoulli_distribution sign(0.5);
  for (double& x : v) x = sign(rng) ? x : -x;
  return v;
}

std::vector<OpCase> eltwise_pool_cases() {
  std::vector<OpCase> cases;
  for (const Shape& s : {Shape{3, 17}, Shape{2, 3, 5, 7}, Shape{1}}) {
    cases.push_back({"Relu " + shape_str(s), make_node("Relu"), [s](std::mt19937& rng) {
                       Vec x = uniform(rng, s);
                       return Prepared{{f32_tensor(s, x)}, {f32_out(s)}, {relu(x)}};
                     }});
    cases.push_back({"ReluGrad " + shape_str(s), make_node("ReluGrad", kRavnestDomain), [s](std::mt19937& rng) {
                       Vec x = away_from_zero(rng, s), dy = uniform(rng, s);
                       auto objective = [&](const Vec& xv) { return ref::dot(dy, relu(xv)); };
                       return Prepared{{f32_tensor(s, dy), f32_tensor(s, relu(x))},
                                       {f32_out(s)},
                                       {ref::numeric_gradient(objective, x, 1e-3)}};
                     }});
  }
  struct PoolProblem {
    std::string label;
    Shape xs;
    ref::PoolAttrs a;
    bool ties = false;  // values from {0, 1, 2}: windows with equal maxima (the first in scan order wins)
  };
  const std::vector<PoolProblem> problems = {
      {"2x2 s2", {2, 3, 8, 8}, {2, 2, 2, 2, 0, 0, 0, 0, false}},
      {"2x2 s2 odd", {1, 2, 7, 9}, {2, 2, 2, 2, 0, 0, 0, 0, false}},
      {"2x2 s2 ties", {2, 3, 8, 8}, {2, 2, 2, 2, 0, 0, 0, 0, false}, true},
      {"3x3 s1 ties", {1, 2, 6, 7}, {3, 3, 1, 1, 0, 0, 0, 0, false}, true},
      {"3x3 s2 pad1 odd", {1, 2, 7, 9}, {3, 3, 2, 2, 1, 1, 1, 1, false}},
      {"3x3 s2 ceil", {1, 2, 6, 6}, {3, 3, 2, 2, 0, 0, 0, 0, true}},
  };
  for (const PoolProblem& p : problems) {
    Node node = make_node("MaxPool");
    node.attrs["kernel_shape"] = std::vector<int64_t>{p.a.kh, p.a.kw};
    node.attrs["strides"] = std::vector<int64_t>{p.a.sh, p.a.sw};
    node.attrs["pads"] = std::vector<int64_t>{p.a.pt, p.a.pl, p.a.pb, p.a.pr};
    node.attrs["ceil_mode"] = int64_t{p.a.ceil_mode};
    const Shape ys = ref::pool_out_shape(p.xs, p.a);
    cases.push_back({"MaxPool " + p.label, node, [p, ys](std::mt19937& rng) {
                       Vec x = distinct(rng, p.xs), indices;
                       if (p.ties)
                         for (auto& v : x) v = std::uniform_int_distribution<int>(0, 2)(rng);
                       Vec y = ref::maxpool(x, p.xs, p.a, &indices);
                       return Prepared{{f32_tensor(p.xs, x)},
                                       {f32_out(ys), ValueInfo::of("indices", DType::kI64, ys)},
                                       {y, indices}};
                     }});
    cases.push_back({"MaxPoolGrad " + p.label, make_node("MaxPoolGrad", kRavnestDomain), [p, ys](std::mt19937& rng) {
                       Vec x = distinct(rng, p.xs), indices, dy = uniform(rng, ys);
                       ref::maxpool(x, p.xs, p.a, &indices);
                       std::vector<int64_t> idx(indices.begin(), indices.end());
                       auto objective = [&](const Vec& xv) { return ref::dot(dy, ref::maxpool(xv, p.xs, p.a)); };
                       return Prepared{{f32_tensor(ys, dy), i64_tensor(ys, idx)},
                                       {f32_out(p.xs)},
                                       {ref::numeric_gradient(objective, x, 1e-3)}};
                     }});
  }
  return cases;
}

// ---- Shape ops, Add, Sum, ReduceSum ------------------------------------------

std::vector<OpCase> shape_and_elementwise_cases() {
  std::vector<OpCase> cases;
  cases.push_back({"Reshape", make_node("Reshape"), [](std::mt19937& rng) {
                     Vec x = uniform(rng, {2, 3, 4});
                     return Prepared{{f32_tensor({2, 3, 4}, x), i64_tensor({2}, {6, -1})}, {f32_out({6, 4})}, {x}};
                   }});
  cases.push_back({"Flatten", make_node("Flatten"), [](std::mt19937& rng) {
                     Vec x = uniform(rng, {2, 3, 4});
                     return Prepared{{f32_tensor({2, 3, 4}, x)}, {f32_out({2, 12})}, {x}};
                   }});
  cases.push_back({"Identity", make_node("Identity"), [](std::mt19937& rng) {
                     Vec x = uniform(rng, {5});
                     return Prepared{{f32_tensor({5}, x)}, {f32_out({5})}, {x}};
                   }});
  for (const std::vector<int64_t>& perm : {std::vector<int64_t>{2, 0, 1}, std::vector<int64_t>{}, {0, 2, 1}}) {
    Node node = make_node("Transpose");
    if (!perm.empty()) node.attrs["perm"] = perm;
    const Shape xs = {2, 3, 5};
    const std::vector<int64_t> p = perm.empty() ? std::vector<int64_t>{2, 1, 0} : perm;
    const Shape ys = {xs[p[0]], xs[p[1]], xs[p[2]]};
    cases.push_back({"Transpose perm=" + shape_str(perm), node, [=](std::mt19937& rng) {
                       Vec x = uniform(rng, xs);
                       return Prepared{{f32_tensor(xs, x)}, {f32_out(ys)}, {ref::transpose(x, xs, p)}};
                     }});
  }
  const std::vector<std::array<Shape, 3>> add_shapes = {
      {Shape{5, 6}, Shape{5, 6}, Shape{5, 6}},       {Shape{2, 3, 4}, Shape{4}, Shape{2, 3, 4}},
      {Shape{2, 1, 4}, Shape{3, 1}, Shape{2, 3, 4}}, {Shape{}, Shape{2, 3}, Shape{2, 3}},
      {Shape{3, 4, 5}, Shape{3, 1, 1}, Shape{3, 4, 5}}, {Shape{1, 7}, Shape{3, 1}, Shape{3, 7}},
  };
  for (const auto& s : add_shapes) {
    cases.push_back({"Add " + shape_str(s[0]) + " + " + shape_str(s[1]), make_node("Add"), [s](std::mt19937& rng) {
                       Vec a = uniform(rng, s[0]), b = uniform(rng, s[1]);
                       return Prepared{{f32_tensor(s[0], a), f32_tensor(s[1], b)},
                                       {f32_out(s[2])},
                                       {ref::add(a, s[0], b, s[1], s[2])}};
                     }});
  }
  cases.push_back({"Sum of 3", make_node("Sum"), [](std::mt19937& rng) {
                     Vec a = uniform(rng, {4, 5}), b = uniform(rng, {4, 5}), c = uniform(rng, {4, 5});
                     Vec y(a.size());
                     for (size_t i = 0; i < y.size(); ++i) y[i] = a[i] + b[i] + c[i];
                     return Prepared{{f32_tensor({4, 5}, a), f32_tensor({4, 5}, b), f32_tensor({4, 5}, c)},
                                     {f32_out({4, 5})},
                                     {y}};
                   }});
  struct ReduceProblem {
    std::vector<int64_t> axes;
    bool keepdims;
    Shape ys;
  };
  const Shape xs = {2, 3, 4};
  const std::vector<ReduceProblem> reductions = {
      {{1}, true, {2, 1, 4}}, {{0, 2}, false, {3}}, {{}, false, {}}, {{-1}, true, {2, 3, 1}}, {{0}, false, {3, 4}}};
  for (const ReduceProblem& r : reductions) {
    Node node = make_node("ReduceSum");
    node.attrs["keepdims"] = int64_t{r.keepdims};
    cases.push_back({"ReduceSum axes=" + shape_str(r.axes) + " keepdims=" + std::to_string(r.keepdims), node,
                     [r, xs](std::mt19937& rng) {
                       Vec x = uniform(rng, xs);
                       std::vector<bool> reduce(xs.size(), r.axes.empty());
                       for (int64_t a : r.axes) reduce[a < 0 ? a + 3 : a] = true;
                       Prepared out;
                       out.inputs = {f32_tensor(xs, x)};
                       if (!r.axes.empty()) out.inputs.push_back(i64_tensor({int64_t(r.axes.size())}, r.axes));
                       out.outputs = {f32_out(r.ys)};
                       out.expected = {ref::reduce_sum(x, xs, reduce)};
                       return out;
                     }});
  }
  return cases;
}

// ---- SoftmaxCrossEntropyLoss and its gradient -----------------------------------

std::vector<OpCase> loss_cases() {
  std::vector<OpCase> cases;
  const int64_t N = 6, C = 5;
  for (const std::string reduction : {"mean", "sum", "none"}) {
    for (bool ignore : {false, true}) {
      Node node = make_node("SoftmaxCrossEntropyLoss");
      node.attrs["reduction"] = reduction;
      if (ignore) node.attrs["ignore_index"] = int64_t{2};
      const std::string label = reduction + (ignore ? " ignore_index=2" : "");
      const Shape loss_shape = reduction == "none" ? Shape{N} : Shape{};
      auto reduce = [reduction](const ref::SceResult& r) {
        double total = 0;
        for (double l : r.per_sample) total += l;
        return reduction == "mean" ? total / static_cast<double>(r.counted) : total;
      };
      // Labels cover every class; with ignore_index=2 some samples are ignored.
      const std::vector<int64_t> labels = {0, 2, 4, 1, 2, 3};
      cases.push_back({"SoftmaxCrossEntropyLoss " + label, node, [=](std::mt19937& rng) {
                         Vec scores = uniform(rng, {N, C}, -3, 3);
                         ref::SceResult r = ref::softmax_cross_entropy(scores, N, C, labels, ignore, 2);
                         Vec loss = reduction == "none" ? r.per_sample : Vec{reduce(r)};
                         return Prepared{{f32_tensor({N, C}, scores), i64_tensor({N}, labels)},
                                         {f32_out(loss_shape, "loss"), f32_out({N, C}, "log_prob")},
                                         {loss, r.log_prob}};
                       }});
      Node grad = node;
      grad.op = "SoftmaxCrossEntropyLossGrad";
      grad.domain = kRavnestDomain;
      cases.push_back({"SoftmaxCrossEntropyLossGrad " + label, grad, [=](std::mt19937& rng) {
                         Vec scores = uniform(rng, {N, C}, -3, 3), dloss = uniform(rng, loss_shape);
                         ref::SceResult r = ref::softmax_cross_entropy(scores, N, C, labels, ignore, 2);
                         // Objective: <dloss, loss(scores)>, whose gradient is what the kernel returns.
                         auto objective = [&](const Vec& s) {
                           ref::SceResult rs = ref::softmax_cross_entropy(s, N, C, labels, ignore, 2);
                           return reduction == "none" ? ref::dot(dloss, rs.per_sample) : dloss[0] * reduce(rs);
                         };
                         return Prepared{{f32_tensor(loss_shape, dloss), f32_tensor({N, C}, r.log_prob),
                                          i64_tensor({N}, labels)},
                                         {f32_out({N, C})},
                                         {ref::numeric_gradient(objective, scores, 1e-5)}};
                       }});
    }
  }
  return cases;
}

std::vector<OpCase> all_cases() {
  std::vector<OpCase> all;
  for (auto family : {conv_cases, gemm_cases, eltwise_pool_cases, shape_and_elementwise_cases, loss_cases})
    for (OpCase& c : family()) all.push_back(std::move(c));
  return all;
}

TEST(KernelsTest, EveryCaseMatchesTheFloat64Reference) {
  uint32_t seed = 1;
  for (const OpCase& c : all_cases()) check_case(c, seed++);
}

TEST(KernelsTest, EveryOpOfTheContractHasAKernelAndACase) {
  const std::vector<std::pair<std::string, std::string>> ops = {
      {"", "Conv"}, {"", "Relu"}, {"", "MaxPool"}, {"", "Flatten"}, {"", "Reshape"}, {"", "Identity"},
      {"", "Gemm"}, {"", "MatMul"}, {"", "Add"}, {"", "ReduceSum"}, {"", "Sum"}, {"", "SoftmaxCrossEntropyLoss"},
      {"", "Transpose"}, {kRavnestDomain, "ConvGradInput"}, {kRavnestDomain, "ConvGradWeight"},
      {kRavnestDomain, "ReluGrad"}, {kRavnestDomain, "MaxPoolGrad"}, {kRavnestDomain, "SoftmaxCrossEntropyLossGrad"},
      {kRavnestDomain, "SGD"}};
  const std::vector<OpCase> cases = all_cases();
  for (const auto& [domain, op] : ops) {
    EXPECT_TRUE(KernelRegistry::global().has(domain, op)) << domain << "." << op;
    if (op == "SGD") continue;  // checked by its own test below
    bool covered = false;
    for (const OpCase& c : cases) covered |= c.node.op == op && c.node.domain == domain;
    EXPECT_TRUE(covered) << "no harness case for " << op;
  }
}

TEST(KernelsTest, ConvAndReluPickTheOneDnnCandidate) {
  Node conv = make_node("Conv");
  ConvProblem p = conv_problems()[0];
  set_conv_attrs(conv, p);
  std::mt19937 rng(7);
  Prepared prepared{{f32_tensor(p.xs, uniform(rng, p.xs)), f32_tensor(p.ws, uniform(rng, p.ws))},
                    {f32_out(ref::conv_out_shape(p.xs, p.ws, p.a))},
                    {}};
  std::string impl;
  run_kernel(conv, prepared, &impl);
  EXPECT_EQ(impl, "onednn");
  Prepared relu{{f32_tensor({4}, {1, -1, 2, -2})}, {f32_out({4})}, {}};
  run_kernel(make_node("Relu"), relu, &impl);
  EXPECT_EQ(impl, "onednn");
}

// With two OpenMP threads, a transpose big enough to be threaded whose outer
// dims are all 1 (a 2-D weight: one tile transpose) used to index an empty dim
// list in parallel_for_each_strided and crash (BERT's full-size FFN weight).
TEST(KernelsTest, ThreadedTransposeOfAMatrixMatchesTheLoop) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  for (Shape shape : {Shape{1024, 256}, Shape{1, 300, 700}}) {
    Node node = make_node("Transpose");
    std::vector<int64_t> perm(shape.size());
    std::iota(perm.begin(), perm.end(), 0);
    std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
    node.attrs["perm"] = perm;
    std::mt19937 rng(3);
    const Vec x = uniform(rng, shape);
    Shape out_shape = shape;
    std::swap(out_shape[out_shape.size() - 1], out_shape[out_shape.size() - 2]);
    Prepared p{{f32_tensor(shape, x)}, {f32_out(out_shape)}, {}};
    std::vector<Tensor> out = run_kernel(node, p, nullptr);
    ASSERT_EQ(out.size(), 1u);
    const int64_t rows = shape[shape.size() - 2], cols = shape.back();
    int64_t wrong = 0;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        wrong += out[0].data<float>()[j * rows + i] != static_cast<float>(x[static_cast<size_t>(i * cols + j)]);
    EXPECT_EQ(wrong, 0) << shape_str(shape);
  }
  omp_set_num_threads(saved);
}

TEST(KernelsTest, LossRejectsLabelOutOfRange) {
  Node node = make_node("SoftmaxCrossEntropyLoss");
  node.attrs["reduction"] = std::string("sum");
  node.inputs = {"s", "l"};
  node.outputs = {"loss"};
  KernelRequest request;
  request.node = &node;
  request.inputs = {ValueInfo::of("s", DType::kF32, {2, 3}), ValueInfo::of("l", DType::kI64, {2})};
  request.outputs = {ValueInfo::of("loss", DType::kF32, {})};
  auto kernel = KernelRegistry::global().build(request);
  ASSERT_TRUE(kernel.ok()) << kernel.status().to_string();
  Tensor s = Tensor::zeros(DType::kF32, {2, 3}), l = i64_tensor({2}, {1, 3}), loss = Tensor::empty(DType::kF32, {});
  Status status = (*kernel)->run({&s, &l}, {&loss});
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("label 3 of sample 1"), std::string::npos) << status.message();
}

// SGD over 3 steps, each written out by hand from docs/training-ops.md.
TEST(KernelsTest, SgdMatchesHandComputationOverThreeSteps) {
  for (bool nesterov : {false, true}) {
    SCOPED_TRACE(nesterov ? "nesterov" : "heavy ball");
    Node node = make_node("SGD", kRavnestDomain);
    node.attrs["momentum"] = 0.9f;
    node.attrs["weight_decay"] = 0.1f;
    node.attrs["nesterov"] = int64_t{nesterov};
    node.inputs = {"p", "g", "v", "lr"};
    KernelRequest request;
    request.node = &node;
    for (const char* name : {"p", "g", "v"}) request.inputs.push_back(ValueInfo::of(name, DType::kF32, {2}));
    request.inputs.push_back(ValueInfo::of("lr", DType::kF32, {}));
    auto kernel = KernelRegistry::global().build(request);
    ASSERT_TRUE(kernel.ok()) << kernel.status().to_string();
    Tensor p = f32_tensor({2}, {1.0, -2.0}), v = Tensor::zeros(DType::kF32, {2}), lr = f32_tensor({}, {0.5});
    const double grads[3][2] = {{0.5, 1.0}, {-0.25, 0.5}, {1.0, -1.0}};
    double ep[2] = {1.0, -2.0}, ev[2] = {0.0, 0.0};
    for (int step = 0; step < 3; ++step) {
      Tensor g = f32_tensor({2}, {grads[step][0], grads[step][1]});
      ASSERT_TRUE((*kernel)->run({&p, &g, &v, &lr}, {}).ok());
      for (int i = 0; i < 2; ++i) {
        const double gd = grads[step][i] + 0.1 * ep[i];
        ev[i] = 0.9 * ev[i] + gd;
        ep[i] -= 0.5 * (nesterov ? gd + 0.9 * ev[i] : ev[i]);
        EXPECT_NEAR(p.data<float>()[i], ep[i], 1e-5) << "step " << step << " param " << i;
        EXPECT_NEAR(v.data<float>()[i], ev[i], 1e-5) << "step " << step << " velocity " << i;
      }
    }
    // Step 1 by hand for element 0: g' = 0.5 + 0.1*1 = 0.6, v = 0.6,
    // p = 1 - 0.5*(0.6 + 0.9*0.6) = 0.43 with nesterov, 1 - 0.5*0.6 = 0.7 without.
  }
}

// ---- Registry selection ------------------------------------------------------

class ConstKernel final : public Kernel {
 public:
  Status run(const std::vector<Tensor*>&, const std::vector<Tensor*>&) override { return ok_status(); }
};

TEST(KernelRegistryTest, TriesCandidatesInOrderAndExplainsRejections) {
  KernelRegistry registry;
  auto declines = [](const std::string& why) {
    return [why](const KernelRequest& r) -> Result<std::unique_ptr<Kernel>> {
      return error(Code::kUnsupported, r.node->describe(), ": ", why);
    };
  };
  registry.add("", "Foo", {"fast", Device::kCpu, declines("needs AVX-1024")});
  registry.add("", "Foo", {"ref", Device::kCpu, [](const KernelRequest&) -> Result<std::unique_ptr<Kernel>> {
                             return std::unique_ptr<Kernel>(std::make_unique<ConstKernel>());
                           }});
  registry.add("", "Bar", {"fast", Device::kCpu, declines("needs AVX-1024")});
  registry.add("", "Bar", {"ref", Device::kCpu, declines("rank 7 is too high")});
  Node node = make_node("Foo");
  KernelRequest request;
  request.node = &node;
  request.inputs = {ValueInfo::of("x", DType::kF32, {3, 4})};
  set_verbose(true);
  std::string impl;
  auto foo = registry.build(request, &impl);
  ASSERT_TRUE(foo.ok());
  EXPECT_EQ(impl, "ref");
  node.op = "Bar";
  node.name = "bar1";
  auto bar = registry.build(request, &impl);
  set_verbose(false);
  ASSERT_FALSE(bar.ok());
  EXPECT_EQ(bar.status().code(), Code::kUnsupported);
  const std::string& msg = bar.status().message();
  for (const char* part : {"Bar 'bar1'", "3x4", "'fast'", "needs AVX-1024", "'ref'", "rank 7 is too high"})
    EXPECT_NE(msg.find(part), std::string::npos) << part << " missing from: " << msg;
  node.op = "Baz";
  auto baz = registry.build(request);
  ASSERT_FALSE(baz.ok());
  EXPECT_NE(baz.status().message().find("Baz"), std::string::npos);
}

TEST(KernelRegistryTest, ShapeErrorsNameTheNode) {
  Node node = make_node("Conv");
  node.name = "conv7";
  node.attrs["kernel_shape"] = std::vector<int64_t>{3, 3};
  node.inputs = {"x", "w"};
  node.outputs = {"y"};
  KernelRequest request;
  request.node = &node;
  request.inputs = {ValueInfo::of("x", DType::kF32, {1, 2, 8, 8}), ValueInfo::of("w", DType::kF32, {4, 2, 3, 3})};
  request.outputs = {ValueInfo::of("y", DType::kF32, {1, 4, 8, 8})};  // should be 6x6 without pads
  auto kernel = KernelRegistry::global().build(request);
  ASSERT_FALSE(kernel.ok());
  EXPECT_NE(kernel.status().message().find("Conv 'conv7'"), std::string::npos) << kernel.status().message();
}

}  // namespace
}  // namespace ravnest::rt
