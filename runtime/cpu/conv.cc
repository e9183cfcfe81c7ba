// 2-D convolution kernels on oneDNN: Conv (forward, optional bias), and the
// ai.ravnest gradients ConvGradInput (backward data, B work) and ConvGradWeight
// (backward weights with optional bias gradient, W work).
//
// Guarantees: the ONNX attributes (strides, pads, dilations, group, kernel_shape,
// auto_pad) are resolved once at build time into one ConvGeometry shared by the
// three ops, and checked against the program's static shapes; primitives and
// layout buffers are created once at build time; tensors at the kernel boundary
// are row-major (NCHW, OIHW = GOIHW for groups).
#include <algorithm>
#include <optional>

#include "runtime/cpu/common.h"
#include "runtime/cpu/onednn.h"

namespace ravnest::rt::cpu {
namespace {

using dnnl::memory;

struct ConvGeometry {
  Shape x, w, y;  // [N,C,H,W], [M,C/group,kH,kW], [N,M,OH,OW]
  int64_t group = 1;
  memory::dims strides, dilates, pad_l, pad_r;  // oneDNN convention: dilation 0 = dense
};

// Resolves the attributes of a Conv-family node for the given X, W and Y shapes.
Result<ConvGeometry> conv_geometry(const KernelRequest& request, const Shape& x, const Shape& w, const Shape& y) {
  const Node& node = *request.node;
  if (x.size() != 4 || w.size() != 4 || y.size() != 4)
    return decline(request, "only 2-D convolution (4-D NCHW tensors) is supported; X is ", shape_str(x), ", W is ",
                   shape_str(w), ", Y is ", shape_str(y));
  ConvGeometry g;
  g.x = x;
  g.w = w;
  g.y = y;
  g.group = node.attr_int("group", 1);
  const std::vector<int64_t> kernel = node.attr_ints("kernel_shape", {w[2], w[3]});
  const std::vector<int64_t> strides = node.attr_ints("strides", {1, 1});
  const std::vector<int64_t> dilations = node.attr_ints("dilations", {1, 1});
  std::vector<int64_t> pads = node.attr_ints("pads", {0, 0, 0, 0});
  if (kernel.size() != 2 || strides.size() != 2 || dilations.size() != 2 || pads.size() != 4)
    return error(Code::kInvalidArgument, node.describe(), ": kernel_shape/strides/dilations need 2 values and pads 4");
  if (kernel[0] != w[2] || kernel[1] != w[3])
    return error(Code::kInvalidArgument, node.describe(), ": kernel_shape ", shape_str(kernel),
                 " disagrees with W shape ", shape_str(w));
  if (g.group < 1 || x[1] % g.group != 0 || w[0] % g.group != 0 || w[1] * g.group != x[1])
    return error(Code::kInvalidArgument, node.describe(), ": group ", g.group, " does not fit X ", shape_str(x),
                 " and W ", shape_str(w));
  for (int i = 0; i < 2; ++i)
    if (strides[i] < 1 || dilations[i] < 1)
      return error(Code::kInvalidArgument, node.describe(), ": strides and dilations must be >= 1");
  const std::string auto_pad = node.attr_string("auto_pad", "NOTSET");
  for (int i = 0; i < 2; ++i) {
    const int64_t in = x[2 + i];
    const int64_t span = (kernel[i] - 1) * dilations[i] + 1;
    if (auto_pad == "VALID") {
      pads[i] = pads[i + 2] = 0;
    } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      const int64_t out = (in + strides[i] - 1) / strides[i];
      const int64_t total = std::max<int64_t>(0, (out - 1) * strides[i] + span - in);
      const int64_t small = total / 2;
      pads[i] = auto_pad == "SAME_UPPER" ? small : total - small;
      pads[i + 2] = total - pads[i];
    } else if (auto_pad != "NOTSET") {
      return decline(request, "auto_pad '", auto_pad, "' is not supported");
    }
    const int64_t expected = (in + pads[i] + pads[i + 2] - span) / strides[i] + 1;
    if (expected != y[2 + i])
      return error(Code::kInvalidArgument, node.describe(), ": output spatial dim ", i, " is ", y[2 + i],
                   " in the program but the attributes give ", expected, " (X ", shape_str(x), ", W ", shape_str(w),
                   ")");
  }
  if (y[0] != x[0] || y[1] != w[0])
    return error(Code::kInvalidArgument, node.describe(), ": Y ", shape_str(y), " does not match X ", shape_str(x),
                 " and W ", shape_str(w));
  g.strides = {strides[0], strides[1]};
  g.dilates = {dilations[0] - 1, dilations[1] - 1};
  g.pad_l = {pads[0], pads[1]};
  g.pad_r = {pads[2], pads[3]};
  return g;
}

// Descriptors of one convolution problem: plain (row-major) and `any` (let oneDNN choose).
struct ConvDescs {
  memory::desc x_plain, w_plain, y_plain, b_plain;
  memory::desc x_any, w_any, y_any;
};

ConvDescs conv_descs(const ConvGeometry& g) {
  using tag = memory::format_tag;
  const auto f32 = memory::data_type::f32;
  ConvDescs d;
  memory::dims w_dims = to_dims(g.w);
  tag w_tag = tag::oihw;
  if (g.group > 1) {
    w_dims = {g.group, g.w[0] / g.group, g.w[1], g.w[2], g.w[3]};
    w_tag = tag::goihw;  // same bytes as ONNX [M, C/g, kH, kW]
  }
  d.x_plain = memory::desc(to_dims(g.x), f32, tag::nchw);
  d.y_plain = memory::desc(to_dims(g.y), f32, tag::nchw);
  d.w_plain = memory::desc(w_dims, f32, w_tag);
  d.b_plain = memory::desc({g.w[0]}, f32, tag::x);
  d.x_any = memory::desc(to_dims(g.x), f32, tag::any);
  d.y_any = memory::desc(to_dims(g.y), f32, tag::any);
  d.w_any = memory::desc(w_dims, f32, tag::any);
  return d;
}

// The forward primitive descriptor; also the hint for the backward ones.
dnnl::convolution_forward::primitive_desc forward_pd(const ConvGeometry& g, const ConvDescs& d, bool with_bias,
                                                     dnnl::prop_kind prop) {
  auto desc = with_bias ? dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct, d.x_any,
                                                          d.w_any, d.b_plain, d.y_any, g.strides, g.dilates,
                                                          g.pad_l, g.pad_r)
                        : dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct, d.x_any,
                                                          d.w_any, d.y_any, g.strides, g.dilates, g.pad_l, g.pad_r);
  return dnnl::convolution_forward::primitive_desc(desc, engine());
}

Status check_f32_io(const KernelRequest& request, size_t n_inputs, size_t n_outputs) {
  for (size_t i = 0; i < n_inputs; ++i)
    if (has_input(request, i)) RN_RETURN_IF_ERROR(check_input_dtype(request, i, DType::kF32));
  for (size_t i = 0; i < n_outputs; ++i)
    if (has_output(request, i)) RN_RETURN_IF_ERROR(check_output_dtype(request, i, DType::kF32));
  return ok_status();
}

// Conv: inputs X, W, B (optional); output Y.
class ConvForward final : public Kernel {
 public:
  static Result<std::unique_ptr<Kernel>> build(const KernelRequest& request) {
    RN_RETURN_IF_ERROR(check_arity(request, 2, 3, 1, 1));
    RN_RETURN_IF_ERROR(check_f32_io(request, 3, 1));
    RN_ASSIGN_OR_RETURN(ConvGeometry g,
                        conv_geometry(request, input_shape(request, 0), input_shape(request, 1), output_shape(request, 0)));
    const bool with_bias = has_input(request, 2);
    auto kernel = std::make_unique<ConvForward>();
    RN_RETURN_IF_ERROR(onednn_guard(request.node->describe(), [&]() -> Status {
      const ConvDescs d = conv_descs(g);
      auto pd = forward_pd(g, d, with_bias, dnnl::prop_kind::forward_training);
      kernel->prim_ = dnnl::convolution_forward(pd);
      kernel->x_ = PlainArg(d.x_plain, pd.src_desc(), false);
      kernel->w_ = PlainArg(d.w_plain, pd.weights_desc(), false);
      kernel->y_ = PlainArg(d.y_plain, pd.dst_desc(), true);
      if (with_bias) kernel->b_ = PlainArg(d.b_plain, pd.bias_desc(), false);
      kernel->with_bias_ = with_bias;
      return ok_status();
    }));
    return std::unique_ptr<Kernel>(std::move(kernel));
  }

  Status run(const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) override {
    return onednn_guard("Conv", [&]() -> Status {
      dnnl::stream& s = stream();
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, x_.bind_input(in[0]->raw(), s)},
                                           {DNNL_ARG_WEIGHTS, w_.bind_input(in[1]->raw(), s)},
                                           {DNNL_ARG_DST, y_.bind_output(out[0]->raw())}};
      if (with_bias_) args[DNNL_ARG_BIAS] = b_.bind_input(in[2]->raw(), s);
      prim_.execute(s, args);
      y_.finish_output(s);
      s.wait();
      return ok_status();
    });
  }

 private:
  dnnl::convolution_forward prim_;
  PlainArg x_, w_, y_, b_;
  bool with_bias_ = false;
};

// ConvGradInput: inputs dY, W; output dX (its shape is X's).
class ConvBackwardData final : public Kernel {
 public:
  static Result<std::unique_ptr<Kernel>> build(const KernelRequest& request) {
    RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
    RN_RETURN_IF_ERROR(check_f32_io(request, 2, 1));
    RN_ASSIGN_OR_RETURN(ConvGeometry g,
                        conv_geometry(request, output_shape(request, 0), input_shape(request, 1), input_shape(request, 0)));
    auto kernel = std::make_unique<ConvBackwardData>();
    RN_RETURN_IF_ERROR(onednn_guard(request.node->describe(), [&]() -> Status {
      const ConvDescs d = conv_descs(g);
      auto hint = forward_pd(g, d, false, dnnl::prop_kind::forward_training);
      dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, d.x_any, d.w_any, d.y_any,
                                                 g.strides, g.dilates, g.pad_l, g.pad_r);
      dnnl::convolution_backward_data::primitive_desc pd(desc, engine(), hint);
      kernel->prim_ = dnnl::convolution_backward_data(pd);
      kernel->dy_ = PlainArg(d.y_plain, pd.diff_dst_desc(), false);
      kernel->w_ = PlainArg(d.w_plain, pd.weights_desc(), false);
      kernel->dx_ = PlainArg(d.x_plain, pd.diff_src_desc(), true);
      return ok_status();
    }));
    return std::unique_ptr<Kernel>(std::move(kernel));
  }

  Status run(const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) override {
    return onednn_guard("ConvGradInput", [&]() -> Status {
      dnnl::stream& s = stream();
      prim_.execute(s, {{DNNL_ARG_DIFF_DST, dy_.bind_input(in[0]->raw(), s)},
                        {DNNL_ARG_WEIGHTS, w_.bind_input(in[1]->raw(), s)},
                        {DNNL_ARG_DIFF_SRC, dx_.bind_output(out[0]->raw())}});
      dx_.finish_output(s);
      s.wait();
      return ok_status();
    });
  }

 private:
  dnnl::convolution_backward_data prim_;
  PlainArg dy_, w_, dx_;
};

// ConvGradWeight: inputs dY, X; outputs dW, dB (optional).
class ConvBackwardWeights final : public Kernel {
 public:
  static Result<std::unique_ptr<Kernel>> build(const KernelRequest& request) {
    RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 2));
    RN_RETURN_IF_ERROR(check_f32_io(request, 2, 2));
    RN_ASSIGN_OR_RETURN(ConvGeometry g,
                        conv_geometry(request, input_shape(request, 1), output_shape(request, 0), input_shape(request, 0)));
    const bool with_bias = has_output(request, 1);
    if (with_bias && output_shape(request, 1) != Shape{g.w[0]})
      return error(Code::kInvalidArgument, request.node->describe(), ": dB is ", shape_str(output_shape(request, 1)),
                   ", expected ", g.w[0]);
    auto kernel = std::make_unique<ConvBackwardWeights>();
    RN_RETURN_IF_ERROR(onednn_guard(request.node->describe(), [&]() -> Status {
      const ConvDescs d = conv_descs(g);
      auto hint = forward_pd(g, d, with_bias, dnnl::prop_kind::forward_training);
      auto desc = with_bias ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, d.x_any,
                                                                       d.w_any, d.b_plain, d.y_any, g.strides,
                                                                       g.dilates, g.pad_l, g.pad_r)
                            : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, d.x_any,
                                                                       d.w_any, d.y_any, g.strides, g.dilates,
                                                                       g.pad_l, g.pad_r);
      dnnl::convolution_backward_weights::primitive_desc pd(desc, engine(), hint);
      kernel->prim_ = dnnl::convolution_backward_weights(pd);
      kernel->dy_ = PlainArg(d.y_plain, pd.diff_dst_desc(), false);
      kernel->x_ = PlainArg(d.x_plain, pd.src_desc(), false);
      kernel->dw_ = PlainArg(d.w_plain, pd.diff_weights_desc(), true);
      if (with_bias) kernel->db_ = PlainArg(d.b_plain, pd.diff_bias_desc(), true);
      kernel->with_bias_ = with_bias;
      return ok_status();
    }));
    return std::unique_ptr<Kernel>(std::move(kernel));
  }

  Status run(const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) override {
    return onednn_guard("ConvGradWeight", [&]() -> Status {
      dnnl::stream& s = stream();
      std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, dy_.bind_input(in[0]->raw(), s)},
                                           {DNNL_ARG_SRC, x_.bind_input(in[1]->raw(), s)},
                                           {DNNL_ARG_DIFF_WEIGHTS, dw_.bind_output(out[0]->raw())}};
      if (with_bias_) args[DNNL_ARG_DIFF_BIAS] = db_.bind_output(out[1]->raw());
      prim_.execute(s, args);
      dw_.finish_output(s);
      if (with_bias_) db_.finish_output(s);
      s.wait();
      return ok_status();
    });
  }

 private:
  dnnl::convolution_backward_weights prim_;
  PlainArg dy_, x_, dw_, db_;
  bool with_bias_ = false;
};

}  // namespace

void register_conv_kernels(KernelRegistry& registry) {
  registry.add("", "Conv", {"onednn", Device::kCpu, ConvForward::build});
  registry.add(kRavnestDomain, "ConvGradInput", {"onednn", Device::kCpu, ConvBackwardData::build});
  registry.add(kRavnestDomain, "ConvGradWeight", {"onednn", Device::kCpu, ConvBackwardWeights::build});
}

}  // namespace ravnest::rt::cpu
