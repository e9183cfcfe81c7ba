// CPU kernels of the normalization op family (frontend/ops/normalization.cc):
// BatchNormalization forward as plain loops, LayerNormalization forward on oneDNN, their ai.ravnest
// gradients BatchNormalizationGrad / BatchNormalizationParamGrad (B / W work) and
// LayerNormalizationGrad / LayerNormalizationParamGrad as plain loops.
//
// Guarantees:
//  * BatchNormalization, X [N, C, spatial...] seen as [N, C, S]:
//    - training (attribute training_mode=1 and RunContext.training): Y is normalised
//      with the batch mean and the biased (population) batch variance; then the
//      running statistics are updated per ONNX:
//        running = input_running * momentum + batch * (1 - momentum)
//      IN PLACE into the kernel's INPUT tensors 3 (input_mean) and 4 (input_var), and
//      copied to outputs 1 (running_mean) and 2 (running_var) when present. Inputs 3
//      and 4 are the only inputs this kernel mutates; the runtime must bind them to
//      the stage's persistent running-statistics state (never to a copy).
//    - evaluation (training_mode=0, or RunContext.training false): Y is normalised
//      with inputs 3 and 4; nothing is written but Y (outputs 1/2, if present, get
//      copies of the unchanged inputs 3/4).
//  * The gradient kernels recompute the batch statistics from X (two passes per
//    channel, double accumulators), so B never reads W's outputs and the forward
//    node keeps ONNX's three outputs. With training_mode=0 they use the running
//    statistics given as inputs instead.
//  * LayerNormalization over axes [axis, rank): outputs Mean and InvStdDev =
//    1/sqrt(var + epsilon) (biased variance), shaped X[:axis] + 1s; its gradient
//    kernels read those two values instead of recomputing them.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/cpu/common.h"
#include "runtime/cpu/onednn.h"

namespace ravnest::rt::cpu {
namespace {

using dnnl::memory;

// Sum over j < n of f(j), in 8 float lanes (vectorisable) folded into a double.
template <typename F>
double lane_sum(int64_t n, F&& f) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += f(j + l);
  double total = 0;
  for (; j < n; ++j) total += f(j);
  for (float a : acc) total += a;
  return total;
}

Status check_f32(const KernelRequest& request) {
  for (size_t i = 0; i < request.inputs.size(); ++i)
    if (has_input(request, i)) RN_RETURN_IF_ERROR(check_input_dtype(request, i, DType::kF32));
  for (size_t i = 0; i < request.outputs.size(); ++i)
    if (has_output(request, i)) RN_RETURN_IF_ERROR(check_output_dtype(request, i, DType::kF32));
  return ok_status();
}

// ------------------------------------------------------------ BatchNormalization

// X [N, C, spatial...] as [N, C, S].
struct ChannelLayout {
  int64_t n = 0, c = 0, s = 1;
  int64_t per_channel() const { return n * s; }
};

Result<ChannelLayout> channel_layout(const KernelRequest& request, const Shape& x) {
  if (x.size() < 2) return error(Code::kInvalidArgument, request.node->describe(), ": X ", shape_str(x), " is not [N, C, ...]");
  ChannelLayout l;
  l.n = x[0];
  l.c = x[1];
  for (size_t i = 2; i < x.size(); ++i) l.s *= x[i];
  if (l.per_channel() == 0) return decline(request, "empty batch");
  return l;
}

Status check_channel_inputs(const KernelRequest& request, const ChannelLayout& l, std::initializer_list<size_t> inputs) {
  for (size_t i : inputs)
    if (input_shape(request, i) != Shape{l.c})
      return error(Code::kInvalidArgument, request.node->describe(), ": input ", i, " is ",
                   shape_str(input_shape(request, i)), ", expected [", l.c, "]");
  return ok_status();
}

// Mean and biased variance of channel c of X [N, C, S]: two passes, double accumulators.
struct ChannelMoments {
  double mean = 0, var = 0;
};

ChannelMoments channel_moments(const ChannelLayout& l, int64_t c, const float* x) {
  ChannelMoments m;
  const int64_t stride = l.c * l.s;
  double sum_x = 0;
  for (int64_t n = 0; n < l.n; ++n) {
    const float* xr = x + n * stride + c * l.s;
    sum_x += lane_sum(l.s, [xr](int64_t j) { return xr[j]; });
  }
  m.mean = sum_x / static_cast<double>(l.per_channel());
  const float mean_f = static_cast<float>(m.mean);
  double sum_sq = 0;
  for (int64_t n = 0; n < l.n; ++n) {
    const float* xr = x + n * stride + c * l.s;
    sum_sq += lane_sum(l.s, [xr, mean_f](int64_t j) { return (xr[j] - mean_f) * (xr[j] - mean_f); });
  }
  m.var = sum_sq / static_cast<double>(l.per_channel());
  return m;
}

// Forward, one pass over channels (parallel): batch statistics (training) or the running
// ones (evaluation), then Y = (X - mean) * scale / sqrt(var + epsilon) + B. (oneDNN 2.6
// offers only its reference implementation for this plain [N, C, S] layout, which cost
// 80% of a small ResNet's forward.)
class BatchNormForward final : public Kernel {
 public:
  static Result<std::unique_ptr<Kernel>> build(const KernelRequest& request) {
    RN_RETURN_IF_ERROR(check_arity(request, 5, 5, 1, 3));
    RN_RETURN_IF_ERROR(check_f32(request));
    const Node& node = *request.node;
    RN_ASSIGN_OR_RETURN(ChannelLayout l, channel_layout(request, input_shape(request, 0)));
    RN_RETURN_IF_ERROR(check_channel_inputs(request, l, {1, 2, 3, 4}));
    auto k = std::make_unique<BatchNormForward>();
    k->layout_ = l;
    k->training_mode_ = node.attr_int("training_mode", 0) != 0;
    k->momentum_ = node.attr_float("momentum", 0.9f);
    k->epsilon_ = node.attr_float("epsilon", 1e-5f);
    k->batch_mean_.resize(static_cast<size_t>(l.c));
    k->batch_var_.resize(static_cast<size_t>(l.c));
    return std::unique_ptr<Kernel>(std::move(k));
  }

  Status run(const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) override {
    return run(in, out, RunContext{});
  }

  Status run(const std::vector<Tensor*>& in, const std::vector<Tensor*>& out, const RunContext& context) override {
    const bool batch_stats = training_mode_ && context.training;
    const ChannelLayout& l = layout_;
    const float* x = in[0]->data<float>();
    const float* scale = in[1]->data<float>();
    const float* bias = in[2]->data<float>();
    float* running_mean = in[3]->data<float>();
    float* running_var = in[4]->data<float>();
    float* y = out[0]->data<float>();
    const int64_t stride = l.c * l.s;
    parallel_for(l.c, 3 * l.per_channel(), [&](int64_t c_begin, int64_t c_end) {
      for (int64_t c = c_begin; c < c_end; ++c) {
        const size_t ci = static_cast<size_t>(c);
        double mean = running_mean[c], var = running_var[c];
        if (batch_stats) {
          const ChannelMoments m = channel_moments(l, c, x);
          mean = m.mean, var = m.var;
          batch_mean_[ci] = static_cast<float>(mean), batch_var_[ci] = static_cast<float>(var);
        }
        const float k = static_cast<float>(scale[c] / std::sqrt(var + epsilon_));
        const float mean_f = static_cast<float>(mean), b = bias[c];
        for (int64_t n = 0; n < l.n; ++n) {
          const float* xr = x + n * stride + c * l.s;
          float* yr = y + n * stride + c * l.s;
          for (int64_t j = 0; j < l.s; ++j) yr[j] = (xr[j] - mean_f) * k + b;
        }
      }
    });
    if (batch_stats) {
      // ONNX: running = input_running * momentum + batch * (1 - momentum), batch variance biased.
      const float m = momentum_;
      for (int64_t c = 0; c < l.c; ++c) {
        running_mean[c] = running_mean[c] * m + batch_mean_[static_cast<size_t>(c)] * (1.0f - m);
        running_var[c] = running_var[c] * m + batch_var_[static_cast<size_t>(c)] * (1.0f - m);
      }
    }
    const size_t bytes = static_cast<size_t>(l.c) * sizeof(float);
    if (out.size() > 1 && out[1]) std::memcpy(out[1]->raw(), running_mean, bytes);
    if (out.size() > 2 && out[2]) std::memcpy(out[2]->raw(), running_var, bytes);
    return ok_status();
  }

 private:
  ChannelLayout layout_;
  bool training_mode_ = false;
  float momentum_ = 0.9f;
  double epsilon_ = 1e-5;
  std::vector<float> batch_mean_, batch_var_;
};

// Per-channel statistics and the two reductions every BatchNorm gradient needs.
struct ChannelSums {
  double mean = 0, inv_std = 0;
  double sum_dy = 0, sum_dy_xmu = 0;  // sum(dY), sum(dY * (X - mean))
};

// Channel c of [N, C, S] tensors: `training` computes mean/var from X (biased), else uses
// the given running statistics.
ChannelSums channel_sums(const ChannelLayout& l, int64_t c, const float* x, const float* dy, bool training,
                         double running_mean, double running_var, double epsilon) {
  ChannelSums r;
  const int64_t stride = l.c * l.s;
  double var = running_var;
  r.mean = running_mean;
  if (training) {
    const ChannelMoments m = channel_moments(l, c, x);
    r.mean = m.mean, var = m.var;
  }
  const float mean_f = static_cast<float>(r.mean);
  for (int64_t n = 0; n < l.n; ++n) {
    const float* xr = x + n * stride + c * l.s;
    const float* dyr = dy + n * stride + c * l.s;
    r.sum_dy += lane_sum(l.s, [dyr](int64_t j) { return dyr[j]; });
    r.sum_dy_xmu += lane_sum(l.s, [xr, dyr, mean_f](int64_t j) { return dyr[j] * (xr[j] - mean_f); });
  }
  r.inv_std = 1.0 / std::sqrt(var + epsilon);
  return r;
}

// Common build-time checks of the two BatchNorm gradient ops; `stats_at` is the index of
// the running mean input (used when training_mode=0).
struct BatchNormGradConfig {
  ChannelLayout layout;
  bool training = true;
  double epsilon = 1e-5;
};

Result<BatchNormGradConfig> batchnorm_grad_config(const KernelRequest& request, size_t stats_at) {
  RN_RETURN_IF_ERROR(check_f32(request));
  BatchNormGradConfig g;
  g.training = request.node->attr_int("training_mode", 1) != 0;
  g.epsilon = request.node->attr_float("epsilon", 1e-5f);
  if (input_shape(request, 0) != input_shape(request, 1))
    return error(Code::kInvalidArgument, request.node->describe(), ": dY ", shape_str(input_shape(request, 0)),
                 " and X ", shape_str(input_shape(request, 1)), " differ");
  RN_ASSIGN_OR_RETURN(g.layout, channel_layout(request, input_shape(request, 1)));
  if (!g.training) {
    if (!has_input(request, stats_at) || !has_input(request, stats_at + 1))
      return error(Code::kInvalidArgument, request.node->describe(), ": training_mode=0 needs the running mean and var inputs");
    RN_RETURN_IF_ERROR(check_channel_inputs(request, g.layout, {stats_at, stats_at + 1}));
  }
  return g;
}

// BatchNormalizationGrad (B work): dY, X, scale[, mean, var] -> dX.
//   training: dX = scale * inv_std * (dY - mean(dY) - (X - mean) * inv_std^2 * mean(dY * (X - mean)))
//   eval:     dX = scale * inv_std_running * dY
Result<std::unique_ptr<Kernel>> build_batchnorm_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 3, 5, 1, 1));
  RN_ASSIGN_OR_RETURN(BatchNormGradConfig g, batchnorm_grad_config(request, 3));
  RN_RETURN_IF_ERROR(check_channel_inputs(request, g.layout, {2}));
  return make_kernel([g](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const ChannelLayout& l = g.layout;
    const float* dy = in[0]->data<float>();
    const float* x = in[1]->data<float>();
    const float* scale = in[2]->data<float>();
    float* dx = out[0]->data<float>();
    const int64_t stride = l.c * l.s;
    const double count = static_cast<double>(l.per_channel());
    parallel_for(l.c, 3 * l.per_channel(), [&](int64_t c_begin, int64_t c_end) {
      for (int64_t c = c_begin; c < c_end; ++c) {
        const double rm = g.training ? 0.0 : in[3]->data<float>()[c];
        const double rv = g.training ? 1.0 : in[4]->data<float>()[c];
        ChannelSums r;
        if (g.training) r = channel_sums(l, c, x, dy, true, 0, 0, g.epsilon);
        else r.inv_std = 1.0 / std::sqrt(rv + g.epsilon), r.mean = rm;
        const float k = static_cast<float>(scale[c] * r.inv_std);
        const float a = g.training ? static_cast<float>(r.sum_dy / count) : 0.0f;
        const float b = g.training ? static_cast<float>(r.sum_dy_xmu * r.inv_std * r.inv_std / count) : 0.0f;
        const float mean = static_cast<float>(r.mean);
        for (int64_t n = 0; n < l.n; ++n) {
          const int64_t o = n * stride + c * l.s;
          const float* xr = x + o;
          const float* dyr = dy + o;
          float* dxr = dx + o;
          for (int64_t j = 0; j < l.s; ++j) dxr[j] = k * (dyr[j] - a - (xr[j] - mean) * b);
        }
      }
    });
    return ok_status();
  });
}

// BatchNormalizationParamGrad (W work): dY, X[, mean, var] -> dScale = sum(dY * xhat), dBias = sum(dY).
Result<std::unique_ptr<Kernel>> build_batchnorm_param_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 4, 1, 2));
  RN_ASSIGN_OR_RETURN(BatchNormGradConfig g, batchnorm_grad_config(request, 2));
  return make_kernel([g](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const ChannelLayout& l = g.layout;
    float* dscale = out[0] ? out[0]->data<float>() : nullptr;
    float* dbias = out.size() > 1 && out[1] ? out[1]->data<float>() : nullptr;
    parallel_for(l.c, 2 * l.per_channel(), [&](int64_t c_begin, int64_t c_end) {
      for (int64_t c = c_begin; c < c_end; ++c) {
        const double rm = g.training ? 0.0 : in[2]->data<float>()[c];
        const double rv = g.training ? 1.0 : in[3]->data<float>()[c];
        const ChannelSums r =
            channel_sums(l, c, in[1]->data<float>(), in[0]->data<float>(), g.training, rm, rv, g.epsilon);
        if (dscale) dscale[c] = static_cast<float>(r.sum_dy_xmu * r.inv_std);
        if (dbias) dbias[c] = static_cast<float>(r.sum_dy);
      }
    });
    return ok_status();
  });
}

// ------------------------------------------------------------ LayerNormalization

// X as [rows, cols]: cols = the product of the normalised dims [axis, rank).
struct RowLayout {
  int64_t rows = 1, cols = 1;
};

Result<RowLayout> row_layout(const KernelRequest& request, const Shape& x) {
  const int64_t rank = static_cast<int64_t>(x.size());
  int64_t axis = request.node->attr_int("axis", -1);
  if (axis < -rank || axis >= rank)
    return error(Code::kInvalidArgument, request.node->describe(), ": axis ", axis, " is out of range for X ", shape_str(x));
  if (axis < 0) axis += rank;
  RowLayout l;
  for (int64_t i = 0; i < rank; ++i) (i < axis ? l.rows : l.cols) *= x[static_cast<size_t>(i)];
  if (l.rows == 0 || l.cols == 0) return decline(request, "empty tensor");
  return l;
}

Status check_numel(const KernelRequest& request, size_t i, bool is_input, int64_t expected, const char* what) {
  const int64_t got = numel(is_input ? input_shape(request, i) : output_shape(request, i));
  if (got != expected)
    return error(Code::kInvalidArgument, request.node->describe(), ": ", what, " has ", got, " elements, expected ", expected);
  return ok_status();
}

// LayerNormalization forward on oneDNN (X, Scale, B optional -> Y, Mean, InvStdDev optional).
class LayerNormForward final : public Kernel {
 public:
  static Result<std::unique_ptr<Kernel>> build(const KernelRequest& request) {
    RN_RETURN_IF_ERROR(check_arity(request, 2, 3, 1, 3));
    RN_RETURN_IF_ERROR(check_f32(request));
    const Node& node = *request.node;
    if (node.attr_int("stash_type", 1) != 1) return decline(request, "stash_type other than 1 (float32)");
    RN_ASSIGN_OR_RETURN(RowLayout l, row_layout(request, input_shape(request, 0)));
    RN_RETURN_IF_ERROR(check_numel(request, 1, true, l.cols, "Scale"));
    if (has_input(request, 2)) RN_RETURN_IF_ERROR(check_numel(request, 2, true, l.cols, "B"));
    for (size_t i : {size_t{1}, size_t{2}})
      if (has_output(request, i)) RN_RETURN_IF_ERROR(check_numel(request, i, false, l.rows, "statistics output"));
    auto k = std::make_unique<LayerNormForward>();
    k->layout_ = l;
    k->epsilon_ = node.attr_float("epsilon", 1e-5f);
    k->with_bias_ = has_input(request, 2);
    k->mean_buf_.resize(static_cast<size_t>(l.rows));
    k->var_buf_.resize(static_cast<size_t>(l.rows));
    RN_RETURN_IF_ERROR(onednn_guard(node.describe(), [&]() -> Status {
      const memory::desc data = plain_desc({l.rows, l.cols});
      const memory::desc stat = plain_desc({l.rows});
      const memory::desc vec = plain_desc({l.cols});
      auto flags = dnnl::normalization_flags::use_scale;
      if (k->with_bias_) flags = flags | dnnl::normalization_flags::use_shift;
      dnnl::layer_normalization_forward::desc desc(dnnl::prop_kind::forward_training, data, stat, k->epsilon_, flags);
      dnnl::layer_normalization_forward::primitive_desc pd(desc, engine());
      if (pd.workspace_desc().get_size() != 0) return decline(request, "oneDNN wants a workspace");
      k->prim_ = dnnl::layer_normalization_forward(pd);
      k->x_ = memory(data, engine(), DNNL_MEMORY_NONE);
      k->y_ = memory(data, engine(), DNNL_MEMORY_NONE);
      k->scale_ = memory(vec, engine(), DNNL_MEMORY_NONE);
      k->shift_ = memory(vec, engine(), DNNL_MEMORY_NONE);
      k->mean_ = memory(stat, engine(), DNNL_MEMORY_NONE);
      k->var_ = memory(stat, engine(), DNNL_MEMORY_NONE);
      return ok_status();
    }));
    return std::unique_ptr<Kernel>(std::move(k));
  }

  Status run(const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) override {
    // Mean goes straight to its output when present; the variance always to the buffer.
    float* mean = out.size() > 1 && out[1] ? out[1]->data<float>() : mean_buf_.data();
    RN_RETURN_IF_ERROR(onednn_guard("LayerNormalization", [&]() -> Status {
      x_.set_data_handle(in[0]->raw());
      y_.set_data_handle(out[0]->raw());
      scale_.set_data_handle(in[1]->raw());
      mean_.set_data_handle(mean);
      var_.set_data_handle(var_buf_.data());
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, x_}, {DNNL_ARG_DST, y_}, {DNNL_ARG_SCALE, scale_},
                                           {DNNL_ARG_MEAN, mean_}, {DNNL_ARG_VARIANCE, var_}};
      if (with_bias_) {
        shift_.set_data_handle(in[2]->raw());
        args[DNNL_ARG_SHIFT] = shift_;
      }
      dnnl::stream& s = stream();
      prim_.execute(s, args);
      s.wait();
      return ok_status();
    }));
    if (out.size() > 2 && out[2]) {
      float* inv_std = out[2]->data<float>();
      for (int64_t r = 0; r < layout_.rows; ++r) inv_std[r] = 1.0f / std::sqrt(var_buf_[static_cast<size_t>(r)] + epsilon_);
    }
    return ok_status();
  }

 private:
  RowLayout layout_;
  float epsilon_ = 1e-5f;
  bool with_bias_ = false;
  dnnl::layer_normalization_forward prim_;
  memory x_, y_, scale_, shift_, mean_, var_;
  std::vector<float> mean_buf_, var_buf_;
};

// Build-time checks shared by the LayerNorm gradients: dY and X equal, the statistics
// (inputs stats_at, stats_at + 1) one value per row.
Result<RowLayout> layernorm_grad_layout(const KernelRequest& request, size_t stats_at) {
  RN_RETURN_IF_ERROR(check_f32(request));
  if (input_shape(request, 0) != input_shape(request, 1))
    return error(Code::kInvalidArgument, request.node->describe(), ": dY ", shape_str(input_shape(request, 0)),
                 " and X ", shape_str(input_shape(request, 1)), " differ");
  RN_ASSIGN_OR_RETURN(RowLayout l, row_layout(request, input_shape(request, 1)));
  RN_RETURN_IF_ERROR(check_numel(request, stats_at, true, l.rows, "Mean"));
  RN_RETURN_IF_ERROR(check_numel(request, stats_at + 1, true, l.rows, "InvStdDev"));
  return l;
}

// LayerNormalizationGrad (B work): dY, X, Scale, Mean, InvStdDev -> dX.
//   g = dY * Scale; dX = inv_std * (g - mean(g) - xhat * mean(g * xhat)) per row.
Result<std::unique_ptr<Kernel>> build_layernorm_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 5, 5, 1, 1));
  RN_ASSIGN_OR_RETURN(RowLayout l, layernorm_grad_layout(request, 3));
  RN_RETURN_IF_ERROR(check_numel(request, 2, true, l.cols, "Scale"));
  return make_kernel([l](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* dy = in[0]->data<float>();
    const float* x = in[1]->data<float>();
    const float* scale = in[2]->data<float>();
    const float* mean = in[3]->data<float>();
    const float* inv_std = in[4]->data<float>();
    float* dx = out[0]->data<float>();
    const double cols = static_cast<double>(l.cols);
    parallel_for(l.rows, 3 * l.cols, [&](int64_t r_begin, int64_t r_end) {
      for (int64_t r = r_begin; r < r_end; ++r) {
        const float* xr = x + r * l.cols;
        const float* dyr = dy + r * l.cols;
        float* dxr = dx + r * l.cols;
        const float m = mean[r], s = inv_std[r];
        const double sum_g = lane_sum(l.cols, [&](int64_t j) { return dyr[j] * scale[j]; });
        const double sum_gx = lane_sum(l.cols, [&](int64_t j) { return dyr[j] * scale[j] * ((xr[j] - m) * s); });
        const float a = static_cast<float>(sum_g / cols), b = static_cast<float>(sum_gx / cols);
        for (int64_t j = 0; j < l.cols; ++j) dxr[j] = s * (dyr[j] * scale[j] - a - (xr[j] - m) * s * b);
      }
    });
    return ok_status();
  });
}

// LayerNormalizationParamGrad (W work): dY, X, Mean, InvStdDev -> dScale = sum_rows dY * xhat, dB = sum_rows dY.
Result<std::unique_ptr<Kernel>> build_layernorm_param_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 4, 4, 1, 2));
  RN_ASSIGN_OR_RETURN(RowLayout l, layernorm_grad_layout(request, 2));
  return make_kernel([l](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* dy = in[0]->data<float>();
    const float* x = in[1]->data<float>();
    const float* mean = in[2]->data<float>();
    const float* inv_std = in[3]->data<float>();
    float* dscale_out = out[0] ? out[0]->data<float>() : nullptr;
    float* dbias_out = out.size() > 1 && out[1] ? out[1]->data<float>() : nullptr;
    // Column blocks (one per thread, whole when serial) summed over every row, in row order.
    const int64_t blocks = std::min<int64_t>((l.cols + 7) / 8, parallel_threads(2 * l.rows * l.cols));
    const int64_t block = ((l.cols + blocks - 1) / blocks + 7) / 8 * 8;
    parallel_for(blocks, 2 * block * l.rows, [&](int64_t b_begin, int64_t b_end) {
      std::vector<double> dscale(static_cast<size_t>(block)), dbias(static_cast<size_t>(block));
      for (int64_t b = b_begin; b < b_end; ++b) {
        const int64_t j0 = b * block, n = std::min(block, l.cols - j0);
        if (n <= 0) continue;
        std::fill(dscale.begin(), dscale.end(), 0.0);
        std::fill(dbias.begin(), dbias.end(), 0.0);
        for (int64_t r = 0; r < l.rows; ++r) {
          const float* xr = x + r * l.cols + j0;
          const float* dyr = dy + r * l.cols + j0;
          const float m = mean[r], s = inv_std[r];
          for (int64_t j = 0; j < n; ++j) {
            dscale[j] += dyr[j] * ((xr[j] - m) * s);
            dbias[j] += dyr[j];
          }
        }
        for (int64_t j = 0; j < n; ++j) {
          if (dscale_out) dscale_out[j0 + j] = static_cast<float>(dscale[j]);
          if (dbias_out) dbias_out[j0 + j] = static_cast<float>(dbias[j]);
        }
      }
    });
    return ok_status();
  });
}

}  // namespace

void register_normalization_kernels(KernelRegistry& registry) {
  registry.add("", "BatchNormalization", {"ref", Device::kCpu, BatchNormForward::build});
  registry.add(kRavnestDomain, "BatchNormalizationGrad", {"ref", Device::kCpu, build_batchnorm_grad});
  registry.add(kRavnestDomain, "BatchNormalizationParamGrad", {"ref", Device::kCpu, build_batchnorm_param_grad});
  registry.add("", "LayerNormalization", {"onednn", Device::kCpu, LayerNormForward::build});
  registry.add(kRavnestDomain, "LayerNormalizationGrad", {"ref", Device::kCpu, build_layernorm_grad});
  registry.add(kRavnestDomain, "LayerNormalizationParamGrad", {"ref", Device::kCpu, build_layernorm_param_grad});
}

}  // namespace ravnest::rt::cpu
