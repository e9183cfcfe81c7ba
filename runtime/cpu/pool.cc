// MaxPool (2-D, with the optional Indices output) and its gradient MaxPoolGrad.
//
// Guarantees: MaxPool follows ONNX opset 12+ semantics for NCHW input with
// kernel_shape, strides, pads, dilations, ceil_mode (storage_order 0): padded
// positions never win; ties go to the first position in scan order. Indices[i] is
// the offset of the winning element in the flattened input ((n*C + c)*H + h)*W + w.
// MaxPoolGrad zero-fills dX and scatter-adds dY[i] into dX[Indices[i]]; an index
// outside dX is an error naming the node.
#include <algorithm>
#include <limits>

#include "runtime/cpu/common.h"

namespace ravnest::rt::cpu {
namespace {

struct PoolGeometry {
  int64_t n, c, h, w, oh, ow;
  int64_t kh, kw, sh, sw, dh, dw, pt, pl;
};

Result<PoolGeometry> pool_geometry(const KernelRequest& request, const Shape& x, const Shape& y) {
  const Node& node = *request.node;
  if (x.size() != 4 || y.size() != 4)
    return decline(request, "only 2-D pooling of NCHW tensors is supported; X is ", shape_str(x));
  if (node.attr_int("storage_order", 0) != 0) return decline(request, "storage_order 1 (column-major Indices)");
  const std::string auto_pad = node.attr_string("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "VALID") return decline(request, "auto_pad '", auto_pad, "'");
  const std::vector<int64_t> kernel = node.attr_ints("kernel_shape");
  const std::vector<int64_t> strides = node.attr_ints("strides", {1, 1});
  const std::vector<int64_t> dilations = node.attr_ints("dilations", {1, 1});
  std::vector<int64_t> pads = node.attr_ints("pads", {0, 0, 0, 0});
  if (auto_pad == "VALID") pads = {0, 0, 0, 0};
  if (kernel.size() != 2 || strides.size() != 2 || dilations.size() != 2 || pads.size() != 4)
    return error(Code::kInvalidArgument, node.describe(), ": kernel_shape/strides/dilations need 2 values, pads 4");
  const bool ceil_mode = node.attr_int("ceil_mode", 0) != 0;
  for (int i = 0; i < 2; ++i) {
    if (kernel[i] < 1 || strides[i] < 1 || dilations[i] < 1)
      return error(Code::kInvalidArgument, node.describe(), ": kernel_shape, strides and dilations must be >= 1");
    const int64_t span = (kernel[i] - 1) * dilations[i] + 1;
    const int64_t room = x[2 + i] + pads[i] + pads[i + 2] - span;
    int64_t out = (ceil_mode ? (room + strides[i] - 1) / strides[i] : room / strides[i]) + 1;
    // The last window must start inside the input or its leading pad (as PyTorch and ONNX do).
    if (ceil_mode && (out - 1) * strides[i] >= x[2 + i] + pads[i]) --out;
    if (out != y[2 + i])
      return error(Code::kInvalidArgument, node.describe(), ": output spatial dim ", i, " is ", y[2 + i],
                   " in the program but the attributes give ", out, " (X ", shape_str(x), ")");
  }
  if (y[0] != x[0] || y[1] != x[1])
    return error(Code::kInvalidArgument, node.describe(), ": Y ", shape_str(y), " does not match X ", shape_str(x));
  return PoolGeometry{x[0], x[1], x[2], x[3], y[2], y[3], kernel[0], kernel[1], strides[0], strides[1],
                      dilations[0], dilations[1], pads[0], pads[1]};
}

Result<std::unique_ptr<Kernel>> build_maxpool(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 1, 1, 1, 2));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  const bool with_indices = has_output(request, 1);
  if (with_indices) RN_RETURN_IF_ERROR(check_output_dtype(request, 1, DType::kI64));
  RN_ASSIGN_OR_RETURN(PoolGeometry g, pool_geometry(request, input_shape(request, 0), output_shape(request, 0)));
  return make_kernel([g, with_indices](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    int64_t* indices = with_indices ? out[1]->data<int64_t>() : nullptr;
    for (int64_t plane = 0; plane < g.n * g.c; ++plane) {
      const float* src = x + plane * g.h * g.w;
      const int64_t base = plane * g.h * g.w;
      for (int64_t oh = 0; oh < g.oh; ++oh) {
        for (int64_t ow = 0; ow < g.ow; ++ow) {
          float best = -std::numeric_limits<float>::infinity();
          int64_t best_at = -1;
          for (int64_t i = 0; i < g.kh; ++i) {
            const int64_t h = oh * g.sh - g.pt + i * g.dh;
            if (h < 0 || h >= g.h) continue;
            for (int64_t j = 0; j < g.kw; ++j) {
              const int64_t w = ow * g.sw - g.pl + j * g.dw;
              if (w < 0 || w >= g.w) continue;
              const float v = src[h * g.w + w];
              if (best_at < 0 || v > best) {
                best = v;
                best_at = h * g.w + w;
              }
            }
          }
          const int64_t o = (plane * g.oh + oh) * g.ow + ow;
          y[o] = best;
          if (indices) indices[o] = best_at < 0 ? base : base + best_at;
        }
      }
    }
    return ok_status();
  });
}

Result<std::unique_ptr<Kernel>> build_maxpool_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 1, DType::kI64));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  if (input_shape(request, 0) != input_shape(request, 1))
    return error(Code::kInvalidArgument, request.node->describe(), ": dY ", shape_str(input_shape(request, 0)),
                 " and Indices ", shape_str(input_shape(request, 1)), " differ in shape");
  const std::string who = request.node->describe();
  return make_kernel([who](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* dy = in[0]->data<float>();
    const int64_t* indices = in[1]->data<int64_t>();
    float* dx = out[0]->data<float>();
    const int64_t n_dx = out[0]->numel(), n_dy = in[0]->numel();
    std::fill(dx, dx + n_dx, 0.0f);
    for (int64_t i = 0; i < n_dy; ++i) {
      const int64_t at = indices[i];
      if (at < 0 || at >= n_dx)
        return error(Code::kInvalidArgument, who, ": Indices[", i, "] = ", at, " is outside dX of ", n_dx,
                     " elements (Indices must come from the matching MaxPool)");
      dx[at] += dy[i];
    }
    return ok_status();
  });
}

}  // namespace

void register_pool_kernels(KernelRegistry& registry) {
  registry.add("", "MaxPool", {"ref", Device::kCpu, build_maxpool});
  registry.add(kRavnestDomain, "MaxPoolGrad", {"ref", Device::kCpu, build_maxpool_grad});
}

}  // namespace ravnest::rt::cpu
