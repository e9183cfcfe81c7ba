// 2-D pooling kernels: MaxPool (with the optional Indices output) and its gradient
// MaxPoolGrad; AveragePool, GlobalAveragePool and their gradients AveragePoolGrad,
// GlobalAveragePoolGrad (oneDNN pooling first, plain loops as the reference).
//
// Guarantees: MaxPool follows ONNX opset 12+ semantics for NCHW input with
// kernel_shape, strides, pads, dilations, ceil_mode (storage_order 0): padded
// positions never win; ties go to the first position in scan order. Indices[i] is
// the offset of the winning element in the flattened input ((n*C + c)*H + h)*W + w.
// MaxPoolGrad zero-fills dX and scatter-adds dY[i] into dX[Indices[i]]; an index
// outside dX is an error naming the node.
// AveragePool follows PyTorch/ONNX: a window is clipped to the padded input (with
// ceil_mode the last window may overhang the end pad, and the overhang never counts);
// the divisor is the clipped window's size including padding when count_include_pad=1,
// else the number of real input elements in it. GlobalAveragePool is the mean over
// every spatial position. The gradients spread dY / divisor over each window.
#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "runtime/cpu/common.h"
#include "runtime/cpu/onednn.h"

namespace ravnest::rt::cpu {
namespace {

struct PoolGeometry {
  int64_t n, c, h, w, oh, ow;
  int64_t kh, kw, sh, sw, dh, dw, pt, pl;
  int64_t pb = 0, pr = 0;  // end pads as given (ceil_mode may overhang them)
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
                      dilations[0], dilations[1], pads[0], pads[1], pads[2], pads[3]};
}

// The max of one window of one plane (rows from X's top, cols from its left), and its
// offset within the plane: padded positions never win, ties go to the first in scan
// order; an empty window gives -inf at offset 0.
inline void maxpool_window(const PoolGeometry& g, const float* src, int64_t oh, int64_t ow, float* y, int64_t* at) {
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
  *y = best;
  *at = best_at < 0 ? 0 : best_at;
}

// Every window of one plane: y (OH x OW) and, when `indices`, base + the winner's offset.
// Columns whose windows lie inside X along W run as branch-free loops over the output
// row, one per kernel position in scan order (a later position wins only when strictly
// greater, which keeps ONNX's first-in-scan-order ties); SW > 0 fixes the stride at
// compile time so the loads vectorise. `arg` is scratch for OW plane offsets.
template <int64_t SW>
void maxpool_plane(const PoolGeometry& g, const float* src, float* y, int64_t* indices, int64_t base, int32_t* arg) {
  const int64_t sw = SW > 0 ? SW : g.sw;
  const int64_t span_w = (g.kw - 1) * g.dw;
  // Interior columns [ow0, ow1): ow * sw - pl >= 0 and ow * sw - pl + span_w < W.
  const int64_t ow0 = std::min(g.ow, (g.pl + sw - 1) / sw);
  const int64_t last = g.w - 1 + g.pl - span_w;
  const int64_t ow1 = last < 0 ? ow0 : std::clamp<int64_t>(last / sw + 1, ow0, g.ow);
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    float* yr = y + oh * g.ow;
    int64_t* ir = indices ? indices + oh * g.ow : nullptr;
    auto border = [&](int64_t ow) {
      int64_t at = 0;
      maxpool_window(g, src, oh, ow, &yr[ow], &at);
      if (ir) ir[ow] = base + at;
    };
    const int64_t h0 = oh * g.sh - g.pt;
    int64_t i0 = 0;
    while (i0 < g.kh && h0 + i0 * g.dh < 0) ++i0;
    int64_t i1 = i0;
    while (i1 < g.kh && h0 + i1 * g.dh < g.h) ++i1;
    if (i0 == i1 || ow0 >= ow1) {
      for (int64_t ow = 0; ow < g.ow; ++ow) border(ow);
      continue;
    }
    for (int64_t ow = 0; ow < ow0; ++ow) border(ow);
    for (int64_t ow = ow1; ow < g.ow; ++ow) border(ow);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t row = (h0 + i * g.dh) * g.w;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t col = j * g.dw - g.pl;
        const float* r = src + row;
        const int32_t first = static_cast<int32_t>(row + col);
        if (i == i0 && j == 0) {
          for (int64_t ow = ow0; ow < ow1; ++ow) {
            yr[ow] = r[ow * sw + col];
            arg[ow] = first + static_cast<int32_t>(ow * sw);
          }
          continue;
        }
        for (int64_t ow = ow0; ow < ow1; ++ow) {
          const float v = r[ow * sw + col], best = yr[ow];
          const int32_t at = first + static_cast<int32_t>(ow * sw), best_at = arg[ow];
          const int32_t wins = -static_cast<int32_t>(v > best);  // all ones or zero: a select GCC vectorises
          yr[ow] = v > best ? v : best;
          arg[ow] = (at & wins) | (best_at & ~wins);
        }
      }
    }
    if (ir)
      for (int64_t ow = ow0; ow < ow1; ++ow) ir[ow] = base + arg[ow];
  }
}

// 2x2 windows, stride 2, no padding or dilation (the usual pooling layer): every window is inside X, and
// one pass over each output row reads both of its input rows. The same comparisons as maxpool_plane in
// scan order (top-left, top-right, bottom-left, bottom-right; a later one wins only when strictly greater).
void maxpool_plane_2x2(const PoolGeometry& g, const float* src, float* y, int64_t* indices, int64_t base, int32_t* arg) {
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    const float* r0 = src + 2 * oh * g.w;
    const float* r1 = r0 + g.w;
    float* yr = y + oh * g.ow;
    for (int64_t ow = 0; ow < g.ow; ++ow) {
      float best = r0[2 * ow];
      int32_t k = 0;
      const float b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
      k = b > best ? 1 : k;
      best = b > best ? b : best;
      k = c > best ? 2 : k;
      best = c > best ? c : best;
      k = d > best ? 3 : k;
      best = d > best ? d : best;
      yr[ow] = best;
      arg[ow] = k;
    }
    if (!indices) continue;
    int64_t* ir = indices + oh * g.ow;
    const int64_t row = base + 2 * oh * g.w;
    for (int64_t ow = 0; ow < g.ow; ++ow) ir[ow] = row + (arg[ow] >> 1) * g.w + 2 * ow + (arg[ow] & 1);
  }
}

Result<std::unique_ptr<Kernel>> build_maxpool(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 1, 1, 1, 2));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  const bool with_indices = has_output(request, 1);
  if (with_indices) RN_RETURN_IF_ERROR(check_output_dtype(request, 1, DType::kI64));
  RN_ASSIGN_OR_RETURN(PoolGeometry g, pool_geometry(request, input_shape(request, 0), output_shape(request, 0)));
  if (g.h * g.w > std::numeric_limits<int32_t>::max())
    return decline(request, "a plane of ", g.h * g.w, " elements (the plain loop keeps plane offsets in int32)");
  const bool two_by_two = g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.dh == 1 && g.dw == 1 && g.pt == 0 &&
                          g.pl == 0 && (g.oh - 1) * 2 + 1 < g.h && (g.ow - 1) * 2 + 1 < g.w;
  auto plane_fn = two_by_two ? &maxpool_plane_2x2
                  : g.sw == 1 ? &maxpool_plane<1>
                  : g.sw == 2 ? &maxpool_plane<2>
                              : &maxpool_plane<0>;
  return make_kernel([g, with_indices, plane_fn](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    int64_t* indices = with_indices ? out[1]->data<int64_t>() : nullptr;
    const int64_t plane_x = g.h * g.w, plane_y = g.oh * g.ow;
    parallel_for(g.n * g.c, plane_x + plane_y * g.kh * g.kw, [&](int64_t begin, int64_t end) {
      std::vector<int32_t> arg(static_cast<size_t>(g.ow));
      for (int64_t p = begin; p < end; ++p)
        plane_fn(g, x + p * plane_x, y + p * plane_y, indices ? indices + p * plane_y : nullptr, p * plane_x,
                 arg.data());
    });
    return ok_status();
  });
}

// dX = 0, then dX[Indices[i]] += dY[i]. Indices from MaxPool stay inside their own
// (n, c) plane, so planes are independent and split between threads; a run whose
// indices leave their plane is redone serially (same result, and the range check).
Result<std::unique_ptr<Kernel>> build_maxpool_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 1, DType::kI64));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  const Shape dy_shape = input_shape(request, 0), dx_shape = output_shape(request, 0);
  if (dy_shape != input_shape(request, 1))
    return error(Code::kInvalidArgument, request.node->describe(), ": dY ", shape_str(dy_shape), " and Indices ",
                 shape_str(input_shape(request, 1)), " differ in shape");
  // Planes: the leading [N, C] shared by dY and dX (one plane when they differ).
  int64_t planes = 1;
  if (dy_shape.size() >= 2 && dx_shape.size() == dy_shape.size() && dy_shape[0] == dx_shape[0] &&
      dy_shape[1] == dx_shape[1])
    planes = dy_shape[0] * dy_shape[1];
  const std::string who = request.node->describe();
  return make_kernel([who, planes](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* dy = in[0]->data<float>();
    const int64_t* indices = in[1]->data<int64_t>();
    float* dx = out[0]->data<float>();
    const int64_t n_dx = out[0]->numel(), n_dy = in[0]->numel();
    if (planes > 1 && n_dx > 0 && n_dy > 0) {
      const int64_t plane_x = n_dx / planes, plane_y = n_dy / planes;
      std::atomic<bool> outside{false};
      parallel_for(planes, plane_x + plane_y, [&](int64_t begin, int64_t end) {
        std::fill(dx + begin * plane_x, dx + end * plane_x, 0.0f);
        for (int64_t p = begin; p < end; ++p) {
          const int64_t lo = p * plane_x, hi = lo + plane_x;
          for (int64_t i = p * plane_y; i < (p + 1) * plane_y; ++i) {
            const int64_t at = indices[i];
            if (at < lo || at >= hi) {
              outside.store(true, std::memory_order_relaxed);
              return;
            }
            dx[at] += dy[i];
          }
        }
      });
      if (!outside.load()) return ok_status();
    }
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

// ---- AveragePool / GlobalAveragePool and their gradients.

// The geometry of a mean pool between X (`x`) and Y (`y`): from the attributes for
// AveragePool(Grad), the whole plane for GlobalAveragePool(Grad).
Result<PoolGeometry> mean_pool_geometry(const KernelRequest& request, const Shape& x, const Shape& y) {
  const Node& node = *request.node;
  if (node.op.rfind("Global", 0) != 0) return pool_geometry(request, x, y);
  if (x.size() != 4 || y.size() != 4)
    return decline(request, "only NCHW GlobalAveragePool is supported; X is ", shape_str(x));
  if (y != Shape{x[0], x[1], 1, 1})
    return error(Code::kInvalidArgument, node.describe(), ": Y ", shape_str(y), " is not X ", shape_str(x),
                 " pooled to 1x1");
  return PoolGeometry{x[0], x[1], x[2], x[3], 1, 1, x[2], x[3], 1, 1, 1, 1, 0, 0, 0, 0};
}

bool count_include_pad(const Node& node) { return node.attr_int("count_include_pad", 0) != 0; }

// One clipped window of output (oh, ow): rows [h0, h1), cols [w0, w1) inside X, and its divisor.
struct MeanWindow {
  int64_t h0, h1, w0, w1;
  float inv_divisor;
};

MeanWindow mean_window(const PoolGeometry& g, bool include_pad, int64_t oh, int64_t ow) {
  int64_t h0 = oh * g.sh - g.pt, w0 = ow * g.sw - g.pl;
  int64_t h1 = std::min(h0 + g.kh, g.h + g.pb), w1 = std::min(w0 + g.kw, g.w + g.pr);
  const int64_t padded = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, g.h);
  w1 = std::min(w1, g.w);
  const int64_t divisor = include_pad ? padded : (h1 - h0) * (w1 - w0);
  return {h0, h1, w0, w1, divisor > 0 ? 1.0f / static_cast<float>(divisor) : 0.0f};
}

Status check_mean_pool_io(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 1, 1, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  if (request.node->attr_ints("dilations", {1, 1}) != std::vector<int64_t>{1, 1})
    return decline(request, "AveragePool with dilations");
  return ok_status();
}

// The X and Y shapes of a mean-pool node: forward X -> Y, gradient dY -> dX.
bool is_grad_op(const KernelRequest& request) {
  const std::string& op = request.node->op;
  return op.size() > 4 && op.compare(op.size() - 4, 4, "Grad") == 0;
}

Result<PoolGeometry> mean_pool_io_geometry(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_mean_pool_io(request));
  const bool grad = is_grad_op(request);
  return mean_pool_geometry(request, grad ? output_shape(request, 0) : input_shape(request, 0),
                            grad ? input_shape(request, 0) : output_shape(request, 0));
}

// Reference: plain loops, any geometry.
Result<std::unique_ptr<Kernel>> build_mean_pool_ref(const KernelRequest& request) {
  RN_ASSIGN_OR_RETURN(PoolGeometry g, mean_pool_io_geometry(request));
  const bool include_pad = count_include_pad(*request.node);
  const bool grad = is_grad_op(request);
  return make_kernel([g, include_pad, grad](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* src = in[0]->data<float>();
    float* dst = out[0]->data<float>();
    parallel_for(g.n * g.c, g.h * g.w + g.oh * g.ow * g.kh * g.kw, [&](int64_t begin, int64_t end) {
      if (grad) std::fill(dst + begin * g.h * g.w, dst + end * g.h * g.w, 0.0f);
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t xo = plane * g.h * g.w, yo = plane * g.oh * g.ow;
        for (int64_t oh = 0; oh < g.oh; ++oh) {
          for (int64_t ow = 0; ow < g.ow; ++ow) {
            const MeanWindow m = mean_window(g, include_pad, oh, ow);
            if (grad) {
              const float v = src[yo + oh * g.ow + ow] * m.inv_divisor;
              for (int64_t h = m.h0; h < m.h1; ++h)
                for (int64_t w = m.w0; w < m.w1; ++w) dst[xo + h * g.w + w] += v;
            } else {
              float sum = 0.0f;
              for (int64_t h = m.h0; h < m.h1; ++h)
                for (int64_t w = m.w0; w < m.w1; ++w) sum += src[xo + h * g.w + w];
              dst[yo + oh * g.ow + ow] = sum * m.inv_divisor;
            }
          }
        }
      }
    });
    return ok_status();
  });
}

// oneDNN pooling (forward or backward data). oneDNN's include-padding divisor is the
// whole kernel, so a ceil_mode window that overhangs the end pad is left to the reference.
class OnednnMeanPool final : public Kernel {
 public:
  static Result<std::unique_ptr<Kernel>> build(const KernelRequest& request) {
    RN_ASSIGN_OR_RETURN(PoolGeometry g, mean_pool_io_geometry(request));
    const bool include_pad = count_include_pad(*request.node);
    const bool grad = is_grad_op(request);
    // End pads that make oneDNN produce exactly OH x OW windows.
    const int64_t pb = (g.oh - 1) * g.sh + g.kh - g.h - g.pt, pr = (g.ow - 1) * g.sw + g.kw - g.w - g.pl;
    if (include_pad && (pb > g.pb || pr > g.pr))
      return decline(request, "ceil_mode window overhanging the end pad with count_include_pad=1");
    if (pb < 0 || pr < 0 || pb >= g.kh || pr >= g.kw) return decline(request, "window geometry oneDNN cannot express");
    auto kernel = std::make_unique<OnednnMeanPool>();
    kernel->grad_ = grad;
    RN_RETURN_IF_ERROR(onednn_guard(request.node->describe(), [&]() -> Status {
      using dnnl::memory;
      const auto alg = include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                   : dnnl::algorithm::pooling_avg_exclude_padding;
      const memory::desc x_md = plain_desc({g.n, g.c, g.h, g.w}), y_md = plain_desc({g.n, g.c, g.oh, g.ow});
      const memory::dims strides{g.sh, g.sw}, kernel_dims{g.kh, g.kw}, pad_l{g.pt, g.pl}, pad_r{pb, pr};
      dnnl::pooling_forward::desc fwd(grad ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference,
                                      alg, x_md, y_md, strides, kernel_dims, pad_l, pad_r);
      dnnl::pooling_forward::primitive_desc fwd_pd(fwd, engine());
      if (grad) {
        dnnl::pooling_backward::desc bwd(alg, x_md, y_md, strides, kernel_dims, pad_l, pad_r);
        dnnl::pooling_backward::primitive_desc bwd_pd(bwd, engine(), fwd_pd);
        kernel->prim_ = dnnl::pooling_backward(bwd_pd);
        kernel->src_ = memory(y_md, engine(), DNNL_MEMORY_NONE);
        kernel->dst_ = memory(x_md, engine(), DNNL_MEMORY_NONE);
      } else {
        kernel->prim_ = dnnl::pooling_forward(fwd_pd);
        kernel->src_ = memory(x_md, engine(), DNNL_MEMORY_NONE);
        kernel->dst_ = memory(y_md, engine(), DNNL_MEMORY_NONE);
      }
      return ok_status();
    }));
    return std::unique_ptr<Kernel>(std::move(kernel));
  }

  Status run(const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) override {
    return onednn_guard(grad_ ? "AveragePoolGrad" : "AveragePool", [&]() -> Status {
      src_.set_data_handle(in[0]->raw());
      dst_.set_data_handle(out[0]->raw());
      dnnl::stream& s = stream();
      if (grad_) prim_.execute(s, {{DNNL_ARG_DIFF_DST, src_}, {DNNL_ARG_DIFF_SRC, dst_}});
      else prim_.execute(s, {{DNNL_ARG_SRC, src_}, {DNNL_ARG_DST, dst_}});
      s.wait();
      return ok_status();
    });
  }

 private:
  dnnl::primitive prim_;
  dnnl::memory src_, dst_;
  bool grad_ = false;
};

}  // namespace

void register_pool_kernels(KernelRegistry& registry) {
  registry.add("", "MaxPool", {"ref", Device::kCpu, build_maxpool});
  registry.add(kRavnestDomain, "MaxPoolGrad", {"ref", Device::kCpu, build_maxpool_grad});
  for (const char* op : {"AveragePool", "GlobalAveragePool"}) {
    registry.add("", op, {"onednn", Device::kCpu, OnednnMeanPool::build});
    registry.add("", op, {"ref", Device::kCpu, build_mean_pool_ref});
    const std::string grad = std::string(op) + "Grad";
    registry.add(kRavnestDomain, grad, {"onednn", Device::kCpu, OnednnMeanPool::build});
    registry.add(kRavnestDomain, grad, {"ref", Device::kCpu, build_mean_pool_ref});
  }
}

}  // namespace ravnest::rt::cpu
