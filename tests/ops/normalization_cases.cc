// Cases and float64 references of the normalization family (frontend/ops/
// normalization.cc): BatchNormalization (training and evaluation form),
// LayerNormalization, AveragePool, GlobalAveragePool; plus the Conv and MaxPool
// geometries the CNN targets need (groups, depthwise, dilations, asymmetric pads,
// 1x7/7x1, Inception's 3x3 pools) against the core references of core_cases.cc.
// Plain TESTs check BatchNormalization's in-place running-statistics update and
// its evaluation path through the kernel directly.
//
// Guarantees: each reference follows the ONNX definition (opset 17) in float64;
// AveragePool's divisor follows PyTorch's export (window clipped to the padded
// input; count_include_pad counts pads, else only real elements).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <list>
#include <map>

#include "runtime/kernel.h"
#include "runtime/tensor.h"
#include "tests/ops/harness.h"

namespace ravnest::ops_test {
namespace {

using Ints = std::vector<int64_t>;
using Attrs = std::map<std::string, AttrValue>;

InputSpec spec(std::string name, Shape shape, Role role) {
  InputSpec s;
  s.name = std::move(name);
  s.shape = std::move(shape);
  s.role = role;
  return s;
}
InputSpec act(std::string name, Shape shape) { return spec(std::move(name), std::move(shape), Role::kActivation); }
InputSpec param(std::string name, Shape shape) { return spec(std::move(name), std::move(shape), Role::kParameter); }
InputSpec constant(std::string name, Shape shape, double lo, double hi) {
  return InputSpec{std::move(name), std::move(shape), Role::kConstant, DType::kF32, uniform(lo, hi)};
}
InputSpec omitted() { return spec("", {}, Role::kConstant); }

RefTensor f32(Shape shape, Vec data) { return RefTensor{DType::kF32, std::move(shape), std::move(data)}; }

// ---- BatchNormalization ------------------------------------------------------

// X [N, C, S...]: inputs X, scale, B, mean, var; outputs Y, running_mean, running_var.
Result<std::vector<RefTensor>> batchnorm_ref(const Node& node, const std::vector<RefTensor>& in) {
  const Shape& xs = in[0].shape;
  const int64_t n = xs[0], c = xs[1], s = numel(xs) / (n * c);
  const bool training = node.attr_int("training_mode", 0) != 0;
  const double eps = node.attr_float("epsilon", 1e-5f), momentum = node.attr_float("momentum", 0.9f);
  Vec mean(static_cast<size_t>(c)), var(static_cast<size_t>(c)), run_mean = in[3].data, run_var = in[4].data;
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) sum += in[0].data[static_cast<size_t>((i * c + ch) * s + j)];
    const double m = sum / static_cast<double>(n * s);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) {
        const double d = in[0].data[static_cast<size_t>((i * c + ch) * s + j)] - m;
        sq += d * d;
      }
    const size_t k = static_cast<size_t>(ch);
    mean[k] = training ? m : in[3].data[k];
    var[k] = training ? sq / static_cast<double>(n * s) : in[4].data[k];
    if (training) {
      run_mean[k] = in[3].data[k] * momentum + m * (1 - momentum);
      run_var[k] = in[4].data[k] * momentum + var[k] * (1 - momentum);
    }
  }
  Vec y(in[0].data.size());
  for (size_t idx = 0; idx < y.size(); ++idx) {
    const size_t ch = static_cast<size_t>((static_cast<int64_t>(idx) / s) % c);
    y[idx] = (in[0].data[idx] - mean[ch]) / std::sqrt(var[ch] + eps) * in[1].data[ch] + in[2].data[ch];
  }
  std::vector<RefTensor> out{f32(xs, std::move(y)), f32({c}, std::move(run_mean)), f32({c}, std::move(run_var))};
  out.resize(std::min(out.size(), node.outputs.size()));
  return out;
}

OpCase bn_case(std::string label, Shape x, bool training, bool params, std::vector<std::string> outputs = {"y"}) {
  const Shape vec = {x[1]};
  Attrs attrs{{"training_mode", int64_t{training ? 1 : 0}}, {"epsilon", 1e-3f}, {"momentum", 0.8f}};
  return OpCase{std::move(label), make_node("BatchNormalization", {"x", "scale", "b", "mean", "var"}, std::move(outputs), attrs),
                {act("x", x), params ? param("scale", vec) : constant("scale", vec, 0.5, 1.5),
                 params ? param("b", vec) : constant("b", vec, -1, 1), constant("mean", vec, -0.5, 0.5),
                 constant("var", vec, 0.5, 1.5)}};
}

// ---- LayerNormalization ------------------------------------------------------

Result<std::vector<RefTensor>> layernorm_ref(const Node& node, const std::vector<RefTensor>& in) {
  const Shape& xs = in[0].shape;
  const int64_t rank = static_cast<int64_t>(xs.size());
  int64_t axis = node.attr_int("axis", -1);
  if (axis < 0) axis += rank;
  int64_t rows = 1, cols = 1;
  Shape stat = xs;
  for (int64_t i = 0; i < rank; ++i) {
    (i < axis ? rows : cols) *= xs[static_cast<size_t>(i)];
    if (i >= axis) stat[static_cast<size_t>(i)] = 1;
  }
  const double eps = node.attr_float("epsilon", 1e-5f);
  const bool has_bias = in.size() > 2 && in[2].dtype != DType::kUndefined && !in[2].data.empty();
  Vec y(in[0].data.size()), mean(static_cast<size_t>(rows)), inv_std(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const double* x = in[0].data.data() + r * cols;
    double sum = 0, sq = 0;
    for (int64_t j = 0; j < cols; ++j) sum += x[j];
    const double m = sum / static_cast<double>(cols);
    for (int64_t j = 0; j < cols; ++j) sq += (x[j] - m) * (x[j] - m);
    const double is = 1.0 / std::sqrt(sq / static_cast<double>(cols) + eps);
    mean[static_cast<size_t>(r)] = m;
    inv_std[static_cast<size_t>(r)] = is;
    for (int64_t j = 0; j < cols; ++j)
      y[static_cast<size_t>(r * cols + j)] =
          (x[j] - m) * is * in[1].data[static_cast<size_t>(j)] + (has_bias ? in[2].data[static_cast<size_t>(j)] : 0.0);
  }
  std::vector<RefTensor> out{f32(xs, std::move(y)), f32(stat, std::move(mean)), f32(stat, std::move(inv_std))};
  out.resize(std::min(out.size(), node.outputs.size()));
  return out;
}

OpCase ln_case(std::string label, Shape x, int64_t axis, bool bias, std::vector<std::string> outputs = {"y"}) {
  const int64_t a = axis < 0 ? axis + static_cast<int64_t>(x.size()) : axis;
  const Shape norm(x.begin() + a, x.end());
  return OpCase{std::move(label),
                make_node("LayerNormalization", {"x", "scale", bias ? "b" : ""}, std::move(outputs),
                          {{"axis", axis}, {"epsilon", 1e-5f}}),
                {act("x", x), param("scale", norm), bias ? param("b", norm) : omitted()}};
}

// ---- AveragePool, GlobalAveragePool ------------------------------------------

Result<std::vector<RefTensor>> avgpool_ref(const Node& node, const std::vector<RefTensor>& in) {
  const Shape& xs = in[0].shape;
  const Ints k = node.attr_ints("kernel_shape"), s = node.attr_ints("strides", {1, 1});
  const Ints p = node.attr_ints("pads", {0, 0, 0, 0});
  const bool ceil_mode = node.attr_int("ceil_mode", 0) != 0, include_pad = node.attr_int("count_include_pad", 0) != 0;
  Shape ys = {xs[0], xs[1], 0, 0};
  for (size_t i = 0; i < 2; ++i) {
    const int64_t room = xs[2 + i] + p[i] + p[i + 2] - k[i];
    int64_t out = (ceil_mode ? (room + s[i] - 1) / s[i] : room / s[i]) + 1;
    if (ceil_mode && (out - 1) * s[i] >= xs[2 + i] + p[i]) --out;
    ys[2 + i] = out;
  }
  Vec y(static_cast<size_t>(numel(ys)));
  const int64_t h = xs[2], w = xs[3];
  for (int64_t plane = 0; plane < xs[0] * xs[1]; ++plane)
    for (int64_t oh = 0; oh < ys[2]; ++oh)
      for (int64_t ow = 0; ow < ys[3]; ++ow) {
        int64_t h0 = oh * s[0] - p[0], w0 = ow * s[1] - p[1];
        int64_t h1 = std::min(h0 + k[0], h + p[2]), w1 = std::min(w0 + k[1], w + p[3]);
        const int64_t padded = (h1 - h0) * (w1 - w0);
        h0 = std::max<int64_t>(h0, 0), w0 = std::max<int64_t>(w0, 0), h1 = std::min(h1, h), w1 = std::min(w1, w);
        double sum = 0;
        for (int64_t i = h0; i < h1; ++i)
          for (int64_t j = w0; j < w1; ++j) sum += in[0].data[static_cast<size_t>((plane * h + i) * w + j)];
        y[static_cast<size_t>((plane * ys[2] + oh) * ys[3] + ow)] =
            sum / static_cast<double>(include_pad ? padded : (h1 - h0) * (w1 - w0));
      }
  return std::vector<RefTensor>{f32(ys, std::move(y))};
}

Result<std::vector<RefTensor>> global_avgpool_ref(const Node&, const std::vector<RefTensor>& in) {
  const Shape& xs = in[0].shape;
  const int64_t planes = xs[0] * xs[1], s = numel(xs) / planes;
  Shape ys = xs;
  for (size_t i = 2; i < ys.size(); ++i) ys[i] = 1;
  Vec y(static_cast<size_t>(planes), 0.0);
  for (int64_t i = 0; i < planes; ++i) {
    for (int64_t j = 0; j < s; ++j) y[static_cast<size_t>(i)] += in[0].data[static_cast<size_t>(i * s + j)];
    y[static_cast<size_t>(i)] /= static_cast<double>(s);
  }
  return std::vector<RefTensor>{f32(ys, std::move(y))};
}

OpCase avgpool_case(std::string label, Shape x, Ints kernel, Ints strides, Ints pads, int64_t ceil_mode,
                    int64_t include_pad) {
  return OpCase{std::move(label),
                make_node("AveragePool", {"x"}, {"y"},
                          {{"kernel_shape", kernel}, {"strides", strides}, {"pads", pads}, {"ceil_mode", ceil_mode},
                           {"count_include_pad", include_pad}}),
                {act("x", x)}};
}

// ---- Conv and MaxPool geometries of the CNN targets (core references) ---------

OpCase conv_case(std::string label, Shape x, Shape w, bool bias, Attrs attrs) {
  attrs["kernel_shape"] = Ints{w[2], w[3]};
  return OpCase{std::move(label), make_node("Conv", {"x", "w", bias ? "b" : ""}, {"y"}, std::move(attrs)),
                {act("x", x), param("w", w), bias ? param("b", {w[0]}) : omitted()}};
}

OpCase maxpool_case(std::string label, Shape x, Ints kernel, Ints strides, Ints pads, int64_t ceil_mode) {
  return OpCase{std::move(label),
                make_node("MaxPool", {"x"}, {"y"},
                          {{"kernel_shape", kernel}, {"strides", strides}, {"pads", pads}, {"ceil_mode", ceil_mode}}),
                {act("x", x)}};
}

std::vector<OpCase> normalization_cases() {
  std::vector<OpCase> cases;
  auto add = [&](OpCase c) { cases.push_back(std::move(c)); };

  add(bn_case("BatchNormalization/train_4d", {3, 4, 3, 5}, true, true));
  add(bn_case("BatchNormalization/train_2d_odd", {7, 3}, true, true));
  add(bn_case("BatchNormalization/train_3d_activation_only", {2, 5, 7}, true, false));
  OpCase bn_outputs = bn_case("BatchNormalization/train_running_outputs", {4, 3, 2, 3}, true, true, {"y", "rm", "rv"});
  bn_outputs.check_gradients = false;  // the running statistics are state, not differentiable outputs
  add(bn_outputs);
  add(bn_case("BatchNormalization/eval_4d", {2, 3, 4, 4}, false, true));
  add(bn_case("BatchNormalization/eval_2d", {5, 6}, false, true));

  add(ln_case("LayerNormalization/last_axis", {2, 3, 8}, -1, true));
  add(ln_case("LayerNormalization/odd_no_bias", {5, 7}, -1, false));
  add(ln_case("LayerNormalization/axis1_two_dims", {3, 4, 5}, 1, true));
  OpCase ln_stats = ln_case("LayerNormalization/mean_invstd_outputs", {4, 6}, -1, true, {"y", "mean", "inv_std"});
  ln_stats.check_gradients = false;  // Mean/InvStdDev take no gradient
  add(ln_stats);

  add(avgpool_case("AveragePool/3x3_s1_p1_include_pad", {2, 3, 5, 5}, {3, 3}, {1, 1}, {1, 1, 1, 1}, 0, 1));
  add(avgpool_case("AveragePool/3x3_s1_p1_exclude_pad", {1, 2, 6, 5}, {3, 3}, {1, 1}, {1, 1, 1, 1}, 0, 0));
  add(avgpool_case("AveragePool/2x2_s2", {2, 2, 6, 8}, {2, 2}, {2, 2}, {0, 0, 0, 0}, 0, 0));
  add(avgpool_case("AveragePool/5x5_s3_odd", {1, 2, 11, 9}, {5, 5}, {3, 3}, {0, 0, 0, 0}, 0, 1));
  add(avgpool_case("AveragePool/ceil_include_pad", {1, 2, 6, 6}, {3, 3}, {2, 2}, {1, 1, 1, 1}, 1, 1));
  add(avgpool_case("AveragePool/ceil_exclude_pad", {1, 1, 5, 6}, {2, 2}, {2, 2}, {0, 0, 0, 0}, 1, 0));
  add(avgpool_case("AveragePool/asymmetric_pads", {1, 2, 5, 6}, {3, 2}, {2, 1}, {1, 0, 2, 1}, 0, 1));

  add(OpCase{"GlobalAveragePool/4d", make_node("GlobalAveragePool", {"x"}, {"y"}), {act("x", {2, 3, 4, 5})}});
  add(OpCase{"GlobalAveragePool/1x1_plane", make_node("GlobalAveragePool", {"x"}, {"y"}), {act("x", {3, 2, 1, 1})}});
  add(OpCase{"GlobalAveragePool/odd", make_node("GlobalAveragePool", {"x"}, {"y"}), {act("x", {1, 5, 7, 3})}});

  add(conv_case("Conv/group2", {2, 4, 5, 5}, {6, 2, 3, 3}, true, {{"group", int64_t{2}}, {"pads", Ints{1, 1, 1, 1}}}));
  add(conv_case("Conv/depthwise_stride2", {2, 3, 7, 6}, {3, 1, 3, 3}, false,
                {{"group", int64_t{3}}, {"strides", Ints{2, 2}}, {"pads", Ints{1, 1, 1, 1}}}));
  add(conv_case("Conv/depthwise_multiplier2", {1, 2, 5, 5}, {4, 1, 3, 3}, true, {{"group", int64_t{2}}}));
  add(conv_case("Conv/dilation2_pad2", {1, 2, 9, 8}, {3, 2, 3, 3}, true,
                {{"dilations", Ints{2, 2}}, {"pads", Ints{2, 2, 2, 2}}}));
  add(conv_case("Conv/dilation_group_asymmetric", {2, 4, 8, 7}, {4, 2, 2, 3}, false,
                {{"group", int64_t{2}}, {"dilations", Ints{2, 1}}, {"pads", Ints{0, 1, 1, 0}}}));
  add(conv_case("Conv/1x7_pad0_3", {1, 3, 9, 9}, {2, 3, 1, 7}, true, {{"pads", Ints{0, 3, 0, 3}}}));
  add(conv_case("Conv/7x1_pad3_0", {1, 3, 9, 9}, {2, 3, 7, 1}, true, {{"pads", Ints{3, 0, 3, 0}}}));
  add(conv_case("Conv/1x1_stride2_no_bias", {2, 4, 7, 7}, {5, 4, 1, 1}, false, {{"strides", Ints{2, 2}}}));
  add(conv_case("Conv/7x7_stride2_pad3", {1, 3, 11, 11}, {2, 3, 7, 7}, false,
                {{"strides", Ints{2, 2}}, {"pads", Ints{3, 3, 3, 3}}}));

  add(maxpool_case("MaxPool/inception_3x3_s1_p1", {2, 3, 6, 5}, {3, 3}, {1, 1}, {1, 1, 1, 1}, 0));
  add(maxpool_case("MaxPool/inception_3x3_s2", {1, 3, 9, 9}, {3, 3}, {2, 2}, {0, 0, 0, 0}, 0));
  add(maxpool_case("MaxPool/ceil_mode_pad1", {1, 2, 6, 6}, {3, 3}, {2, 2}, {1, 1, 1, 1}, 1));
  return cases;
}

const bool kRegistered = register_reference("BatchNormalization", batchnorm_ref) &&
                         register_reference("LayerNormalization", layernorm_ref) &&
                         register_reference("AveragePool", avgpool_ref) &&
                         register_reference("GlobalAveragePool", global_avgpool_ref) &&
                         register_cases(normalization_cases());

// ---- BatchNormalization's running statistics, through the kernel directly ----

struct BatchNormRun {
  std::unique_ptr<rt::Kernel> kernel;
  rt::Tensor x, scale, bias, mean, var, y, out_mean, out_var;
};

BatchNormRun make_batchnorm(int64_t training_mode, bool with_outputs) {
  const Shape xs = {2, 2, 1, 2};
  Node node = make_node("BatchNormalization", {"x", "scale", "b", "mean", "var"},
                        with_outputs ? std::vector<std::string>{"y", "rm", "rv"} : std::vector<std::string>{"y"},
                        {{"training_mode", training_mode}, {"momentum", 0.75f}, {"epsilon", 1.0f}});
  BatchNormRun r;
  rt::KernelRequest request;
  static std::list<Node> nodes;  // stable addresses: the kernel may keep its request's node
  nodes.push_back(node);
  request.node = &nodes.back();
  request.inputs = {ValueInfo::of("x", DType::kF32, xs), ValueInfo::of("scale", DType::kF32, {2}),
                    ValueInfo::of("b", DType::kF32, {2}), ValueInfo::of("mean", DType::kF32, {2}),
                    ValueInfo::of("var", DType::kF32, {2})};
  request.outputs = {ValueInfo::of("y", DType::kF32, xs)};
  if (with_outputs) {
    request.outputs.push_back(ValueInfo::of("rm", DType::kF32, {2}));
    request.outputs.push_back(ValueInfo::of("rv", DType::kF32, {2}));
  }
  auto kernel = rt::KernelRegistry::global().build(request);
  EXPECT_TRUE(kernel.ok()) << kernel.status().to_string();
  if (kernel.ok()) r.kernel = std::move(*kernel);
  auto tensor = [](Shape s, std::vector<float> v) {
    rt::Tensor t = rt::Tensor::empty(DType::kF32, std::move(s));
    std::copy(v.begin(), v.end(), t.data<float>());
    return t;
  };
  // Channel 0 holds {1, 3, 5, 7} (mean 4, biased var 5), channel 1 holds {2, 2, 2, 2} (mean 2, var 0).
  r.x = tensor(xs, {1, 3, 2, 2, 5, 7, 2, 2});
  r.scale = tensor({2}, {1, 2});
  r.bias = tensor({2}, {0, 1});
  r.mean = tensor({2}, {0, 10});
  r.var = tensor({2}, {1, 4});
  r.y = rt::Tensor::zeros(DType::kF32, xs);
  r.out_mean = rt::Tensor::zeros(DType::kF32, {2});
  r.out_var = rt::Tensor::zeros(DType::kF32, {2});
  return r;
}

Status run(BatchNormRun& r, bool training, bool with_outputs) {
  std::vector<rt::Tensor*> in = {&r.x, &r.scale, &r.bias, &r.mean, &r.var};
  std::vector<rt::Tensor*> out = {&r.y};
  if (with_outputs) out = {&r.y, &r.out_mean, &r.out_var};
  rt::RunContext context;
  context.training = training;
  return r.kernel->run(in, out, context);
}

std::vector<float> values(const rt::Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); }

TEST(BatchNormalizationState, TrainingUpdatesRunningStatisticsInPlace) {
  BatchNormRun r = make_batchnorm(1, true);
  ASSERT_TRUE(r.kernel);
  ASSERT_TRUE(run(r, true, true).ok());
  // running = input * 0.75 + batch * 0.25 (ONNX; the batch variance is the biased one: 5, not 20/3).
  const std::vector<float> mean = {0 * 0.75f + 4 * 0.25f, 10 * 0.75f + 2 * 0.25f};
  const std::vector<float> var = {1 * 0.75f + 5 * 0.25f, 4 * 0.75f + 0 * 0.25f};
  for (size_t c = 0; c < 2; ++c) {
    EXPECT_NEAR(values(r.mean)[c], mean[c], 1e-5) << "input 3 updated in place, channel " << c;
    EXPECT_NEAR(values(r.var)[c], var[c], 1e-5) << "input 4 updated in place, channel " << c;
    EXPECT_NEAR(values(r.out_mean)[c], mean[c], 1e-5);
    EXPECT_NEAR(values(r.out_var)[c], var[c], 1e-5);
  }
  // Y uses the batch statistics (epsilon 1): channel 0 (x - 4) / sqrt(5 + 1), channel 1 constant -> bias 1.
  const std::vector<float> y = values(r.y);
  EXPECT_NEAR(y[0], (1 - 4) / std::sqrt(6.0f), 1e-5);
  EXPECT_NEAR(y[5], (7 - 4) / std::sqrt(6.0f), 1e-5);
  EXPECT_NEAR(y[2], 1.0f, 1e-5);
  // A second step compounds the update.
  ASSERT_TRUE(run(r, true, true).ok());
  EXPECT_NEAR(values(r.mean)[0], mean[0] * 0.75f + 4 * 0.25f, 1e-5);
}

TEST(BatchNormalizationState, EvaluationUsesRunningStatisticsAndLeavesThem) {
  for (int64_t training_mode : {0, 1}) {
    BatchNormRun r = make_batchnorm(training_mode, false);
    ASSERT_TRUE(r.kernel);
    // Evaluation: either the context says so, or the node is in evaluation form.
    ASSERT_TRUE(run(r, training_mode == 0, false).ok());
    EXPECT_EQ(values(r.mean), (std::vector<float>{0, 10})) << "training_mode " << training_mode;
    EXPECT_EQ(values(r.var), (std::vector<float>{1, 4})) << "training_mode " << training_mode;
    const std::vector<float> y = values(r.y);
    EXPECT_NEAR(y[0], (1 - 0) / std::sqrt(2.0f), 1e-5);           // channel 0: (x - 0) / sqrt(1 + 1) * 1 + 0
    EXPECT_NEAR(y[2], (2 - 10) / std::sqrt(5.0f) * 2 + 1, 1e-5);  // channel 1: (x - 10) / sqrt(4 + 1) * 2 + 1
  }
}

}  // namespace
}  // namespace ravnest::ops_test
