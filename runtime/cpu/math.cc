// CPU kernels of the math op family (frontend/ops/math.cc): unary math and its
// ai.ravnest gradients, numpy-broadcasting binary ops (Add, Sub, Mul, Div, Pow,
// PowGrad, Equal, Where, ReduceGrad) and Softmax/SoftmaxGrad.
//
// Guarantees: float32 data (Equal also compares int64; Where's condition and
// Equal's output are bool stored as one byte 0/1; Pow's exponent may be int64).
// Candidates: oneDNN eltwise/softmax primitives first where oneDNN 2.6 has the op
// (JIT-vectorised, threaded by OpenMP), then plain loops. The broadcasting loops
// merge dims that are contiguous for every operand and specialise each row on
// which operands are contiguous and which are broadcast scalars, so the common
// shapes (same shape, row, column, scalar, rank-mismatched) run as vectorised
// contiguous loops. Erf and ErfGrad use float32 approximations (erf rational
// approximation, |error| < 5e-7; exp by range reduction, relative error < 2e-7)
// that vectorise; every other plain loop uses <cmath>. Large plain loops are split
// between OpenMP threads by output element (common.h), so results do not depend on
// the thread count.
#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "runtime/cpu/common.h"
#include "runtime/cpu/onednn.h"

namespace ravnest::rt::cpu {
namespace {

using dnnl::memory;

// ------------------------------------------------------------ float32 helpers

// std::fmin(std::fmax(x, lo), hi) (NaN gives lo) as two compares: std::fmin/fmax are
// libm calls that block vectorisation.
inline float clamp_f(float x, float lo, float hi) {
  const float t = x > lo ? x : lo;
  return t < hi ? t : hi;
}

// Rounds to the nearest integer, ties to even (as std::nearbyint in the default
// rounding mode) for |x| < 2^22, without a libm call: adding and subtracting 1.5 * 2^23
// leaves only the integer part in a float32's mantissa.
inline float round_even(float x) {
  constexpr float kMagic = 12582912.0f;
  return (x + kMagic) - kMagic;
}

// exp(x) for float32 without libm calls, so loops over it vectorise.
inline float fast_exp(float x) {
  x = clamp_f(x, -87.3f, 88.7f);
  const float n = round_even(x * 1.44269504088896341f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // x - n*ln2, ln2 split for accuracy
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// erf(x) as x * P(x^2) / Q(x^2) on [-4, 4] (outside, erf is +-1 in float32).
inline float fast_erf(float x) {
  x = clamp_f(x, -4.0f, 4.0f);
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  return x * p / q;
}

constexpr float kTwoOverSqrtPi = 1.12837916709551257f;

// ------------------------------------------------------------ broadcasting engine

// One row of `len` output elements; bit k of Mask set: operand k is a broadcast
// scalar (step 0), else contiguous. Constant per instantiation, so it vectorises.
template <size_t Mask, typename Out, typename Ptrs, typename F, size_t... I>
void row_fixed(Out* d, const Ptrs& p, int64_t len, const F& f, std::index_sequence<I...>) {
  for (int64_t j = 0; j < len; ++j) d[j] = f(std::get<I>(p)[((Mask >> I) & 1) ? 0 : j]...);
}

template <typename Out, typename Ptrs, typename F, typename Steps, size_t... I>
void row_strided(Out* d, const Ptrs& p, int64_t len, const F& f, const Steps& step, std::index_sequence<I...>) {
  for (int64_t j = 0; j < len; ++j) d[j] = f(std::get<I>(p)[j * step[I + 1]]...);
}

template <typename Out, typename Ptrs, typename F, size_t... I, size_t... M>
void row_dispatch(size_t mask, Out* d, const Ptrs& p, int64_t len, const F& f, std::index_sequence<I...> ops,
                  std::index_sequence<M...>) {
  ((mask == M ? row_fixed<M>(d, p, len, f, ops) : void()), ...);
}

// Y[i] = f(X0[b0(i)], X1[b1(i)], ...) over Y's shape with numpy broadcasting.
template <typename Out, typename... In, typename F>
void broadcast_apply(const Shape& y_shape, const std::vector<std::vector<int64_t>>& in_strides, Out* y,
                     std::tuple<const In*...> x, const F& f) {
  constexpr size_t N = sizeof...(In);
  std::array<std::vector<int64_t>, N + 1> strides;
  strides[0] = contiguous_strides(y_shape);
  for (size_t k = 0; k < N; ++k) strides[k + 1] = in_strides[k];
  using Seq = std::make_index_sequence<N>;
  parallel_for_each_strided<N + 1>(y_shape, strides, [&](const auto& off, int64_t len, const auto& step) {
    std::tuple<const In*...> p = x;
    size_t mask = 0;
    bool unit = true;
    std::apply([&](auto&... ptr) {
      size_t k = 0;
      ((ptr += off[k + 1], mask |= (step[k + 1] == 0 ? size_t{1} << k : 0), unit &= step[k + 1] <= 1, ++k), ...);
    }, p);
    Out* d = y + off[0];
    if (unit) {
      row_dispatch(mask, d, p, len, f, Seq{}, std::make_index_sequence<size_t{1} << N>{});
      return;
    }
    row_strided(d, p, len, f, step, Seq{});  // a general stride (transposed broadcast): rare
  });
}

// Shapes and strides of a broadcasting node, checked against the program's output.
struct BroadcastPlan {
  Shape y;
  std::vector<std::vector<int64_t>> strides;
};

// `into_output`: the inputs broadcast into the output's shape (ReduceGrad) rather
// than to it.
Result<BroadcastPlan> plan_broadcast(const KernelRequest& request, size_t n_inputs, bool into_output = false) {
  BroadcastPlan plan;
  plan.y = output_shape(request, 0);
  Shape expected = into_output ? plan.y : input_shape(request, 0);
  for (size_t i = into_output ? 0 : 1; i < n_inputs; ++i) {
    Result<Shape> b = broadcast_shapes(expected, input_shape(request, i));
    if (!b.ok()) return b.status().with_context(request.node->describe());
    expected = *b;
  }
  if (expected != plan.y)
    return error(Code::kInvalidArgument, request.node->describe(), ": inputs broadcast to ", shape_str(expected),
                 ", the program says ", shape_str(plan.y));
  for (size_t i = 0; i < n_inputs; ++i) plan.strides.push_back(broadcast_strides(input_shape(request, i), plan.y));
  return plan;
}

Status check_dtypes(const KernelRequest& request, std::initializer_list<DType> inputs, DType output) {
  RN_RETURN_IF_ERROR(check_arity(request, inputs.size(), inputs.size(), 1, 1));
  size_t i = 0;
  for (DType d : inputs) RN_RETURN_IF_ERROR(check_input_dtype(request, i++, d));
  return check_output_dtype(request, 0, output);
}

template <typename... In, size_t... I>
std::tuple<const In*...> input_ptrs(const std::vector<Tensor*>& in, std::index_sequence<I...>) {
  return std::tuple<const In*...>{in[I]->template data<In>()...};
}

// A kernel applying f elementwise with broadcasting over inputs of types In...
template <typename Out, typename... In, typename F>
Result<std::unique_ptr<Kernel>> broadcast_kernel(const KernelRequest& request, F f, bool into_output = false) {
  RN_ASSIGN_OR_RETURN(BroadcastPlan plan, plan_broadcast(request, sizeof...(In), into_output));
  return make_kernel([plan, f](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    broadcast_apply(plan.y, plan.strides, out[0]->data<Out>(), input_ptrs<In...>(in, std::index_sequence_for<In...>{}), f);
    return ok_status();
  });
}

// ------------------------------------------------------------ binary ops

Result<std::unique_ptr<Kernel>> build_binary(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_dtypes(request, {DType::kF32, DType::kF32}, DType::kF32));
  const std::string& op = request.node->op;
  if (op == "Add") return broadcast_kernel<float, float, float>(request, [](float a, float b) { return a + b; });
  if (op == "Sub") return broadcast_kernel<float, float, float>(request, [](float a, float b) { return a - b; });
  if (op == "Mul") return broadcast_kernel<float, float, float>(request, [](float a, float b) { return a * b; });
  if (op == "Div") return broadcast_kernel<float, float, float>(request, [](float a, float b) { return a / b; });
  return decline(request, "not a binary op");
}

Result<std::unique_ptr<Kernel>> build_equal(const KernelRequest& request) {
  const DType t = request.inputs.empty() ? DType::kUndefined : request.inputs[0].dtype;
  auto eq = [](auto a, auto b) -> uint8_t { return a == b; };
  if (t == DType::kF32) {
    RN_RETURN_IF_ERROR(check_dtypes(request, {t, t}, DType::kBool));
    return broadcast_kernel<uint8_t, float, float>(request, eq);
  }
  if (t == DType::kI64) {
    RN_RETURN_IF_ERROR(check_dtypes(request, {t, t}, DType::kBool));
    return broadcast_kernel<uint8_t, int64_t, int64_t>(request, eq);
  }
  return decline(request, "Equal compares float32 or int64 inputs, got ", dtype_name(t));
}

Result<std::unique_ptr<Kernel>> build_where(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_dtypes(request, {DType::kBool, DType::kF32, DType::kF32}, DType::kF32));
  return broadcast_kernel<float, uint8_t, float, float>(request,
                                                        [](uint8_t c, float x, float y) { return c ? x : y; });
}

// ReduceGrad: dX = scale * dY broadcast to attr `shape` (the output's).
Result<std::unique_ptr<Kernel>> build_reduce_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_dtypes(request, {DType::kF32}, DType::kF32));
  const float scale = request.node->attr_float("scale", 1.0f);
  return broadcast_kernel<float, float>(request, [scale](float g) { return g * scale; }, true);
}

// Pow and PowGrad: the exponent (float32 or int64) is converted once per run; a
// scalar exponent of 2, 3 or 0.5 (x^2 in RMSNorm, x^3 in GELU) takes a loop without pow().
class PowKernel final : public Kernel {
 public:
  PowKernel(BroadcastPlan plan, bool grad, DType exponent) : plan_(std::move(plan)), grad_(grad), exponent_(exponent) {}

  Status run(const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& e_in = *in[grad_ ? 2 : 1];
    const float* e = e_in.data<float>();
    if (exponent_ != DType::kF32) {
      buffer_.resize(static_cast<size_t>(e_in.numel()));
      for (size_t i = 0; i < buffer_.size(); ++i) buffer_[i] = static_cast<float>(e_in.data<int64_t>()[i]);
      e = buffer_.data();
    }
    float* y = out[0]->data<float>();
    const float* x = in[grad_ ? 1 : 0]->data<float>();
    const int64_t n = out[0]->numel();
    const bool scalar = e_in.numel() == 1 && in[grad_ ? 1 : 0]->numel() == n;
    const float s = scalar ? e[0] : 0.0f;
    if (!grad_) {
      if (scalar && s == 2.0f) flat_for(n, [&](int64_t i) { y[i] = x[i] * x[i]; });
      else if (scalar && s == 3.0f) flat_for(n, [&](int64_t i) { y[i] = x[i] * x[i] * x[i]; });
      else if (scalar && s == 0.5f) flat_for(n, [&](int64_t i) { y[i] = std::sqrt(x[i]); });
      else broadcast_apply(plan_.y, plan_.strides, y, std::make_tuple(x, e), [](float a, float b) { return std::pow(a, b); });
      return ok_status();
    }
    const float* dy = in[0]->data<float>();
    if (scalar && s == 2.0f) flat_for(n, [&](int64_t i) { y[i] = 2.0f * x[i] * dy[i]; });
    else if (scalar && s == 3.0f) flat_for(n, [&](int64_t i) { y[i] = 3.0f * x[i] * x[i] * dy[i]; });
    else
      broadcast_apply(plan_.y, plan_.strides, y, std::make_tuple(dy, x, e),
                      [](float g, float a, float b) { return b == 0.0f ? 0.0f : g * b * std::pow(a, b - 1.0f); });
    return ok_status();
  }

 private:
  BroadcastPlan plan_;
  bool grad_;
  DType exponent_;
  std::vector<float> buffer_;
};

Result<std::unique_ptr<Kernel>> build_pow(const KernelRequest& request) {
  const bool grad = request.node->op == "PowGrad";
  const size_t n = grad ? 3 : 2;
  RN_RETURN_IF_ERROR(check_arity(request, n, n, 1, 1));
  for (size_t i = 0; i + 1 < n; ++i) RN_RETURN_IF_ERROR(check_input_dtype(request, i, DType::kF32));
  const DType e = request.inputs[n - 1].dtype;
  if (e != DType::kF32 && e != DType::kI64) return decline(request, "exponent must be float32 or int64, got ", dtype_name(e));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  RN_ASSIGN_OR_RETURN(BroadcastPlan plan, plan_broadcast(request, n));
  return std::unique_ptr<Kernel>(std::make_unique<PowKernel>(std::move(plan), grad, e));
}

// ------------------------------------------------------------ unary ops and their gradients

Status check_same_shape(const KernelRequest& request, size_t n_inputs) {
  RN_RETURN_IF_ERROR(check_arity(request, n_inputs, n_inputs, 1, 1));
  for (size_t i = 0; i < n_inputs; ++i) {
    RN_RETURN_IF_ERROR(check_input_dtype(request, i, DType::kF32));
    if (input_shape(request, i) != output_shape(request, 0))
      return error(Code::kInvalidArgument, request.node->describe(), ": input ", i, " is ",
                   shape_str(input_shape(request, i)), " but the output is ", shape_str(output_shape(request, 0)));
  }
  return check_output_dtype(request, 0, DType::kF32);
}

// y[i] = f(x[i]) (one input) or dx[i] = f(dy[i], z[i]) (gradients), as a flat loop.
template <size_t N, typename F>
Result<std::unique_ptr<Kernel>> flat_kernel(const KernelRequest& request, F f) {
  RN_RETURN_IF_ERROR(check_same_shape(request, N));
  return make_kernel([f](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    float* y = out[0]->data<float>();
    const int64_t n = out[0]->numel();
    const float* a = in[0]->data<float>();
    if constexpr (N == 1) {
      flat_for(n, [&](int64_t i) { y[i] = f(a[i]); });
    } else {
      const float* b = in[1]->data<float>();
      flat_for(n, [&](int64_t i) { y[i] = f(a[i], b[i]); });
    }
    return ok_status();
  });
}

Result<std::unique_ptr<Kernel>> build_unary_ref(const KernelRequest& request) {
  const std::string& op = request.node->op;
  if (op == "Sigmoid") return flat_kernel<1>(request, [](float x) { return 1.0f / (1.0f + std::exp(-x)); });
  if (op == "Tanh") return flat_kernel<1>(request, [](float x) { return std::tanh(x); });
  if (op == "Erf") return flat_kernel<1>(request, [](float x) { return fast_erf(x); });
  if (op == "Sqrt") return flat_kernel<1>(request, [](float x) { return std::sqrt(x); });
  if (op == "Neg") return flat_kernel<1>(request, [](float x) { return -x; });
  if (op == "Exp") return flat_kernel<1>(request, [](float x) { return std::exp(x); });
  if (op == "Log") return flat_kernel<1>(request, [](float x) { return std::log(x); });
  if (op == "Sin") return flat_kernel<1>(request, [](float x) { return std::sin(x); });
  if (op == "Cos") return flat_kernel<1>(request, [](float x) { return std::cos(x); });
  if (op == "Reciprocal") return flat_kernel<1>(request, [](float x) { return 1.0f / x; });
  // Gradients: (dY, Y) or (dY, X) as docs/training-ops.md says.
  if (op == "SigmoidGrad") return flat_kernel<2>(request, [](float g, float y) { return g * y * (1.0f - y); });
  if (op == "TanhGrad") return flat_kernel<2>(request, [](float g, float y) { return g * (1.0f - y * y); });
  if (op == "SqrtGrad") return flat_kernel<2>(request, [](float g, float y) { return 0.5f * g / y; });
  if (op == "ReciprocalGrad") return flat_kernel<2>(request, [](float g, float y) { return -g * y * y; });
  if (op == "ErfGrad")
    return flat_kernel<2>(request, [](float g, float x) { return g * kTwoOverSqrtPi * fast_exp(-x * x); });
  if (op == "SinGrad") return flat_kernel<2>(request, [](float g, float x) { return g * std::cos(x); });
  if (op == "CosGrad") return flat_kernel<2>(request, [](float g, float x) { return -g * std::sin(x); });
  return decline(request, "no plain loop for ", op);
}

struct OnednnEltwiseOp {
  const char* op;
  dnnl::algorithm alg;
  float alpha, beta;
  bool backward;  // an ai.ravnest gradient (dY, Y) -> dX using the forward's dst
};

const OnednnEltwiseOp kOnednnEltwise[] = {
    {"Sigmoid", dnnl::algorithm::eltwise_logistic_use_dst_for_bwd, 0, 0, false},
    {"Tanh", dnnl::algorithm::eltwise_tanh_use_dst_for_bwd, 0, 0, false},
    {"Sqrt", dnnl::algorithm::eltwise_sqrt_use_dst_for_bwd, 0, 0, false},
    {"Exp", dnnl::algorithm::eltwise_exp_use_dst_for_bwd, 0, 0, false},
    {"Log", dnnl::algorithm::eltwise_log, 0, 0, false},
    {"Neg", dnnl::algorithm::eltwise_linear, -1, 0, false},
    {"Reciprocal", dnnl::algorithm::eltwise_pow, 1, -1, false},
    {"SigmoidGrad", dnnl::algorithm::eltwise_logistic_use_dst_for_bwd, 0, 0, true},
    {"TanhGrad", dnnl::algorithm::eltwise_tanh_use_dst_for_bwd, 0, 0, true},
    {"SqrtGrad", dnnl::algorithm::eltwise_sqrt_use_dst_for_bwd, 0, 0, true},
};

Result<std::unique_ptr<Kernel>> build_unary_onednn(const KernelRequest& request) {
  const OnednnEltwiseOp* spec = nullptr;
  for (const OnednnEltwiseOp& e : kOnednnEltwise)
    if (request.node->op == e.op) spec = &e;
  if (!spec) return decline(request, "no oneDNN eltwise algorithm");
  RN_RETURN_IF_ERROR(check_same_shape(request, spec->backward ? 2 : 1));
  const int64_t n = numel(output_shape(request, 0));
  if (n == 0) return decline(request, "empty tensor");
  const memory::desc flat({n}, memory::data_type::f32, memory::format_tag::x);
  std::unique_ptr<Kernel> kernel;
  RN_RETURN_IF_ERROR(onednn_guard(request.node->describe(), [&]() -> Status {
    dnnl::eltwise_forward::desc fwd(dnnl::prop_kind::forward_training, spec->alg, flat, spec->alpha, spec->beta);
    dnnl::eltwise_forward::primitive_desc fwd_pd(fwd, engine());
    if (!spec->backward) {
      kernel = std::make_unique<OnednnPrimitiveKernel>(dnnl::eltwise_forward(fwd_pd), flat,
                                              std::vector<int>{DNNL_ARG_SRC, DNNL_ARG_DST}, spec->op);
      return ok_status();
    }
    dnnl::eltwise_backward::desc bwd(spec->alg, flat, flat, spec->alpha, spec->beta);
    dnnl::eltwise_backward::primitive_desc bwd_pd(bwd, engine(), fwd_pd);
    kernel = std::make_unique<OnednnPrimitiveKernel>(dnnl::eltwise_backward(bwd_pd), flat,
                                            std::vector<int>{DNNL_ARG_DIFF_DST, DNNL_ARG_DST, DNNL_ARG_DIFF_SRC}, spec->op);
    return ok_status();
  }));
  return kernel;
}

// ------------------------------------------------------------ Softmax

// [outer, axis, inner] view of a softmax over `axis`.
struct SoftmaxGeometry {
  int64_t outer = 1, dim = 1, inner = 1;
  int axis = 0;
};

Result<SoftmaxGeometry> softmax_geometry(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_same_shape(request, request.node->op == "SoftmaxGrad" ? 2 : 1));
  const Shape s = output_shape(request, 0);
  const int64_t rank = static_cast<int64_t>(s.size());
  int64_t axis = request.node->attr_int("axis", -1);
  if (axis < -rank || axis >= rank)
    return error(Code::kInvalidArgument, request.node->describe(), ": axis ", axis, " is out of range for ",
                 shape_str(s));
  if (axis < 0) axis += rank;
  SoftmaxGeometry g;
  g.axis = static_cast<int>(axis);
  for (int64_t d = 0; d < rank; ++d) (d < axis ? g.outer : d == axis ? g.dim : g.inner) *= s[static_cast<size_t>(d)];
  return g;
}

Result<std::unique_ptr<Kernel>> build_softmax_onednn(const KernelRequest& request) {
  RN_ASSIGN_OR_RETURN(SoftmaxGeometry g, softmax_geometry(request));
  const Shape s = output_shape(request, 0);
  if (s.empty() || s.size() > 6 || numel(s) == 0) return decline(request, "rank ", s.size(), " or empty tensor");
  const memory::desc desc = plain_desc(s);
  const bool grad = request.node->op == "SoftmaxGrad";
  std::unique_ptr<Kernel> kernel;
  RN_RETURN_IF_ERROR(onednn_guard(request.node->describe(), [&]() -> Status {
    dnnl::softmax_forward::desc fwd(dnnl::prop_kind::forward_training, desc, g.axis);
    dnnl::softmax_forward::primitive_desc fwd_pd(fwd, engine());
    if (!grad) {
      kernel = std::make_unique<OnednnPrimitiveKernel>(dnnl::softmax_forward(fwd_pd), desc,
                                              std::vector<int>{DNNL_ARG_SRC, DNNL_ARG_DST}, "Softmax");
      return ok_status();
    }
    dnnl::softmax_backward::desc bwd(desc, desc, g.axis);
    dnnl::softmax_backward::primitive_desc bwd_pd(bwd, engine(), fwd_pd);
    kernel = std::make_unique<OnednnPrimitiveKernel>(dnnl::softmax_backward(bwd_pd), desc,
                                            std::vector<int>{DNNL_ARG_DIFF_DST, DNNL_ARG_DST, DNNL_ARG_DIFF_SRC},
                                            "SoftmaxGrad");
    return ok_status();
  }));
  return kernel;
}

// Softmax: y = exp(x - max) / sum; SoftmaxGrad: dx = y * (dy - sum(dy * y)), along the axis.
Result<std::unique_ptr<Kernel>> build_softmax_ref(const KernelRequest& request) {
  RN_ASSIGN_OR_RETURN(SoftmaxGeometry g, softmax_geometry(request));
  const bool grad = request.node->op == "SoftmaxGrad";
  return make_kernel([g, grad](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* a = in[0]->data<float>();
    const float* y = grad ? in[1]->data<float>() : nullptr;
    float* o = out[0]->data<float>();
    parallel_for(g.outer, 3 * g.dim * g.inner, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        for (int64_t k = 0; k < g.inner; ++k) {
          const int64_t base = i * g.dim * g.inner + k;
          auto at = [&](int64_t j) { return base + j * g.inner; };
          if (grad) {
            double dot = 0;
            for (int64_t j = 0; j < g.dim; ++j) dot += static_cast<double>(a[at(j)]) * y[at(j)];
            for (int64_t j = 0; j < g.dim; ++j) o[at(j)] = y[at(j)] * (a[at(j)] - static_cast<float>(dot));
            continue;
          }
          float m = -INFINITY;
          for (int64_t j = 0; j < g.dim; ++j) m = std::fmax(m, a[at(j)]);
          double sum = 0;
          for (int64_t j = 0; j < g.dim; ++j) sum += o[at(j)] = std::exp(a[at(j)] - m);
          const float inv = static_cast<float>(1.0 / sum);
          for (int64_t j = 0; j < g.dim; ++j) o[at(j)] *= inv;
        }
    });
    return ok_status();
  });
}

}  // namespace

void register_math_kernels(KernelRegistry& registry) {
  for (const char* op : {"Add", "Sub", "Mul", "Div"}) registry.add("", op, {"ref", Device::kCpu, build_binary});
  registry.add("", "Pow", {"ref", Device::kCpu, build_pow});
  registry.add(kRavnestDomain, "PowGrad", {"ref", Device::kCpu, build_pow});
  registry.add("", "Equal", {"ref", Device::kCpu, build_equal});
  registry.add("", "Where", {"ref", Device::kCpu, build_where});
  registry.add(kRavnestDomain, "ReduceGrad", {"ref", Device::kCpu, build_reduce_grad});
  for (const OnednnEltwiseOp& e : kOnednnEltwise)
    registry.add(e.backward ? kRavnestDomain : "", e.op, {"onednn", Device::kCpu, build_unary_onednn});
  for (const char* op : {"Sigmoid", "Tanh", "Erf", "Sqrt", "Neg", "Exp", "Log", "Sin", "Cos", "Reciprocal"})
    registry.add("", op, {"ref", Device::kCpu, build_unary_ref});
  for (const char* op : {"SigmoidGrad", "TanhGrad", "SqrtGrad", "ReciprocalGrad", "ErfGrad", "SinGrad", "CosGrad"})
    registry.add(kRavnestDomain, op, {"ref", Device::kCpu, build_unary_ref});
  registry.add("", "Softmax", {"onednn", Device::kCpu, build_softmax_onednn});
  registry.add("", "Softmax", {"ref", Device::kCpu, build_softmax_ref});
  registry.add(kRavnestDomain, "SoftmaxGrad", {"onednn", Device::kCpu, build_softmax_onednn});
  registry.add(kRavnestDomain, "SoftmaxGrad", {"ref", Device::kCpu, build_softmax_ref});
}

}  // namespace ravnest::rt::cpu
