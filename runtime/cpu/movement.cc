// CPU kernels of the movement op family (frontend/ops/movement.cc): Concat, Split,
// Slice, Gather, Expand, Pad, Tile, Cast, Dropout and the ai.ravnest gradients
// SliceGrad, GatherGrad, DropoutGrad. (Transpose, Reshape, Unsqueeze and friends
// are in shape_ops.cc.)
//
// Guarantees: the pure copies accept any 1/2/4/8-byte dtype; every kernel checks
// at build time that the program's static shapes agree with the op, and the ones
// that read constant inputs at run time (Slice starts/ends/axes/steps, Pad pads,
// Gather indices) check the values and fail naming the node instead of reading out
// of bounds. Dropout's mask depends only on (RunContext seed, step, microbatch, the
// node's name, element index) — not on threads or on previous runs — and
// evaluation runs (context.training false, or training_mode false) are the identity.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/cpu/common.h"
#include "runtime/cpu/registration.h"

namespace ravnest::rt::cpu {
namespace {

using Tensors = std::vector<Tensor*>;

// Calls fn(T{}) with the unsigned integer type of the element width.
template <typename Fn>
void by_width(size_t width, Fn&& fn) {
  switch (width) {
    case 1: fn(uint8_t{}); break;
    case 2: fn(uint16_t{}); break;
    case 4: fn(uint32_t{}); break;
    default: fn(uint64_t{}); break;
  }
}

Status check_width(const KernelRequest& request, DType dtype) {
  const size_t w = dtype_size(dtype);
  if (w != 1 && w != 2 && w != 4 && w != 8) return decline(request, "dtype ", dtype_name(dtype));
  return ok_status();
}

Status check_same_dtype(const KernelRequest& request) {
  const DType dtype = request.inputs[0].dtype;
  RN_RETURN_IF_ERROR(check_width(request, dtype));
  for (const ValueInfo& out : request.outputs)
    if (!out.name.empty() && out.dtype != dtype)
      return decline(request, "output '", out.name, "' is ", dtype_name(out.dtype), ", input is ", dtype_name(dtype));
  return ok_status();
}

template <typename... Parts>
Status bad(const std::string& who, const Parts&... parts) {
  return error(Code::kInvalidArgument, who, ": ", parts...);
}

// dst[dst_strides] = src[src_strides] over `shape` (strides in elements, may be negative or 0 for src).
template <typename T>
void copy_strided(T* dst, const T* src, const Shape& shape, const std::vector<int64_t>& dst_strides,
                  const std::vector<int64_t>& src_strides) {
  parallel_for_each_strided<2>(shape, {dst_strides, src_strides}, [&](const auto& off, int64_t len, const auto& step) {
    T* d = dst + off[0];
    const T* s = src + off[1];
    if (step[0] == 1 && step[1] == 1) std::memcpy(d, s, static_cast<size_t>(len) * sizeof(T));
    else if (step[0] == 1 && step[1] == 0) std::fill(d, d + len, *s);
    else
      for (int64_t j = 0; j < len; ++j) d[j * step[0]] = s[j * step[1]];
  });
}

void copy_strided_bytes(size_t width, void* dst, const void* src, const Shape& shape,
                        const std::vector<int64_t>& dst_strides, const std::vector<int64_t>& src_strides) {
  by_width(width, [&](auto tag) {
    using T = decltype(tag);
    copy_strided(static_cast<T*>(dst), static_cast<const T*>(src), shape, dst_strides, src_strides);
  });
}

// Integer values of a small constant input (int64 or int32).
Result<std::vector<int64_t>> read_ints(const std::string& who, const Tensor* t, const char* what) {
  std::vector<int64_t> v(static_cast<size_t>(t->numel()));
  if (t->dtype() == DType::kI64) std::copy(t->data<int64_t>(), t->data<int64_t>() + t->numel(), v.begin());
  else if (t->dtype() == DType::kI32) std::copy(t->data<int32_t>(), t->data<int32_t>() + t->numel(), v.begin());
  else return bad(who, what, " must be int64 or int32, is ", dtype_name(t->dtype()));
  return v;
}

int64_t prod(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= s[i];
  return p;
}

Result<size_t> axis_of(const KernelRequest& request, int64_t rank) {
  int64_t axis = request.node->attr_int("axis", 0);
  if (axis < -rank || axis >= rank)
    return bad(request.node->describe(), "axis ", axis, " is out of range for rank ", rank);
  return static_cast<size_t>(axis < 0 ? axis + rank : axis);
}

// ---- Concat and Split: slabs of [outer, dim_i * inner] ----

// Bytes per outer index of each part, and the outer count, for parts joined on `axis`.
struct Slabs {
  int64_t outer = 1;
  std::vector<size_t> bytes;
};

Slabs slabs_of(const std::vector<Shape>& parts, size_t axis, size_t width) {
  Slabs s;
  s.outer = prod(parts[0], 0, axis);
  for (const Shape& p : parts) s.bytes.push_back(static_cast<size_t>(prod(p, axis, p.size())) * width);
  return s;
}

// Checks that `parts` join on `axis` into `whole`.
Status check_join(const KernelRequest& request, const std::vector<Shape>& parts, const Shape& whole, size_t axis) {
  int64_t total = 0;
  for (const Shape& p : parts) {
    bool same = p.size() == whole.size();
    for (size_t d = 0; same && d < p.size(); ++d) same = d == axis || p[d] == whole[d];
    if (!same) return bad(request.node->describe(), "part ", shape_str(p), " does not fit ", shape_str(whole), " on axis ", axis);
    total += p[axis];
  }
  if (total != whole[axis])
    return bad(request.node->describe(), "parts sum to ", total, " on axis ", axis, ", the whole is ", shape_str(whole));
  return ok_status();
}

Result<std::unique_ptr<Kernel>> build_concat(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 1, request.inputs.size(), 1, 1));
  RN_RETURN_IF_ERROR(check_same_dtype(request));
  const Shape out = output_shape(request, 0);
  std::vector<Shape> parts;
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    if (!has_input(request, i) || request.inputs[i].dtype != request.inputs[0].dtype)
      return decline(request, "input ", i, " is omitted or of another dtype");
    parts.push_back(input_shape(request, i));
  }
  RN_ASSIGN_OR_RETURN(size_t axis, axis_of(request, static_cast<int64_t>(out.size())));
  RN_RETURN_IF_ERROR(check_join(request, parts, out, axis));
  const Slabs slabs = slabs_of(parts, axis, dtype_size(request.inputs[0].dtype));
  return make_kernel([=](const Tensors& in, const Tensors& outs) -> Status {
    size_t slab = 0;
    for (size_t b : slabs.bytes) slab += b;
    uint8_t* dst = static_cast<uint8_t*>(outs[0]->raw());
    parallel_for(slabs.outer, static_cast<int64_t>(slab / 4), [&](int64_t begin, int64_t end) {
      uint8_t* d = dst + static_cast<size_t>(begin) * slab;
      for (int64_t o = begin; o < end; ++o)
        for (size_t i = 0; i < in.size(); ++i) {
          std::memcpy(d, static_cast<const uint8_t*>(in[i]->raw()) + static_cast<size_t>(o) * slabs.bytes[i],
                      slabs.bytes[i]);
          d += slabs.bytes[i];
        }
    });
    return ok_status();
  });
}

Result<std::unique_ptr<Kernel>> build_split(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 1, 2, 1, request.outputs.size()));
  RN_RETURN_IF_ERROR(check_same_dtype(request));
  const Shape in = input_shape(request, 0);
  std::vector<Shape> parts;
  for (size_t i = 0; i < request.outputs.size(); ++i) {
    if (!has_output(request, i)) return decline(request, "output ", i, " is omitted");
    parts.push_back(output_shape(request, i));
  }
  RN_ASSIGN_OR_RETURN(size_t axis, axis_of(request, static_cast<int64_t>(in.size())));
  RN_RETURN_IF_ERROR(check_join(request, parts, in, axis));
  const Slabs slabs = slabs_of(parts, axis, dtype_size(request.inputs[0].dtype));
  return make_kernel([=](const Tensors& ins, const Tensors& outs) -> Status {
    size_t slab = 0;
    for (size_t b : slabs.bytes) slab += b;
    const uint8_t* src = static_cast<const uint8_t*>(ins[0]->raw());
    parallel_for(slabs.outer, static_cast<int64_t>(slab / 4), [&](int64_t begin, int64_t end) {
      const uint8_t* s = src + static_cast<size_t>(begin) * slab;
      for (int64_t o = begin; o < end; ++o)
        for (size_t i = 0; i < outs.size(); ++i) {
          std::memcpy(static_cast<uint8_t*>(outs[i]->raw()) + static_cast<size_t>(o) * slabs.bytes[i], s,
                      slabs.bytes[i]);
          s += slabs.bytes[i];
        }
    });
    return ok_status();
  });
}

// ---- Slice and SliceGrad ----

// The element offset of the first sliced element and the per-dim strides of the
// slice within a contiguous tensor of shape `data` (ONNX Slice semantics: clamped
// starts/ends, negative steps). The caller checks that the lengths match the
// program's static shape.
struct SliceView {
  Shape shape;
  int64_t base = 0;
  std::vector<int64_t> strides;
};

Result<SliceView> slice_view(const std::string& who, const Shape& data, const Tensors& in) {
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> starts, read_ints(who, in[1], "starts"));
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> ends, read_ints(who, in[2], "ends"));
  std::vector<int64_t> axes(starts.size()), steps(starts.size(), 1);
  for (size_t i = 0; i < axes.size(); ++i) axes[i] = static_cast<int64_t>(i);
  if (in.size() > 3 && in[3]) {
    RN_ASSIGN_OR_RETURN(axes, read_ints(who, in[3], "axes"));
  }
  if (in.size() > 4 && in[4]) {
    RN_ASSIGN_OR_RETURN(steps, read_ints(who, in[4], "steps"));
  }
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    return bad(who, "starts, ends, axes and steps differ in length");
  const int64_t rank = static_cast<int64_t>(data.size());
  SliceView v;
  v.shape = data;
  v.strides = contiguous_strides(data);
  std::vector<bool> seen(data.size(), false);
  for (size_t i = 0; i < starts.size(); ++i) {
    if (axes[i] < -rank || axes[i] >= rank || steps[i] == 0) return bad(who, "axis ", axes[i], " or step 0 is invalid");
    const size_t axis = static_cast<size_t>(axes[i] < 0 ? axes[i] + rank : axes[i]);
    if (seen[axis]) return bad(who, "axis ", axis, " is sliced twice");
    seen[axis] = true;
    const int64_t dim = data[axis], step = steps[i];
    int64_t start = std::clamp(starts[i], -dim, dim), end = std::clamp(ends[i], -dim - 1, dim), len = 0;
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      len = end > start ? (end - start + step - 1) / step : 0;
    } else {
      start = std::clamp<int64_t>(start, 0, std::max<int64_t>(dim - 1, 0));
      end = std::clamp<int64_t>(end, -1, dim - 1);
      len = start > end ? (start - end - step - 1) / (-step) : 0;
    }
    v.shape[axis] = len;
    v.base += start * v.strides[axis];
    v.strides[axis] *= step;
  }
  return v;
}

// Slice (forward: dst contiguous, src the view) and SliceGrad (dst the view of a zeroed dX).
Result<std::unique_ptr<Kernel>> build_slice_like(const KernelRequest& request, bool grad) {
  RN_RETURN_IF_ERROR(check_arity(request, 3, 5, 1, 1));
  RN_RETURN_IF_ERROR(check_same_dtype(request));
  const Shape data = grad ? output_shape(request, 0) : input_shape(request, 0);
  const Shape sliced = grad ? input_shape(request, 0) : output_shape(request, 0);
  const size_t width = dtype_size(request.inputs[0].dtype);
  const std::string who = request.node->describe();
  return make_kernel([=](const Tensors& in, const Tensors& out) -> Status {
    RN_ASSIGN_OR_RETURN(SliceView v, slice_view(who, data, in));
    if (v.shape != sliced)
      return bad(who, "slicing ", shape_str(data), " gives ", shape_str(v.shape), ", the program says ",
                 shape_str(sliced));
    const std::vector<int64_t> dense = contiguous_strides(sliced);
    if (!grad) {
      const uint8_t* src = static_cast<const uint8_t*>(in[0]->raw()) + v.base * static_cast<int64_t>(width);
      copy_strided_bytes(width, out[0]->raw(), src, sliced, dense, v.strides);
    } else {
      std::memset(out[0]->raw(), 0, out[0]->bytes());
      uint8_t* dst = static_cast<uint8_t*>(out[0]->raw()) + v.base * static_cast<int64_t>(width);
      copy_strided_bytes(width, dst, in[0]->raw(), sliced, v.strides, dense);
    }
    return ok_status();
  });
}

Result<std::unique_ptr<Kernel>> build_slice(const KernelRequest& request) { return build_slice_like(request, false); }
Result<std::unique_ptr<Kernel>> build_slice_grad(const KernelRequest& request) {
  return build_slice_like(request, true);
}

// ---- Gather and GatherGrad: data viewed as [outer, dim, inner] ----

struct GatherGeometry {
  int64_t outer = 1, dim = 0, inner = 1, count = 0;  // count = number of indices
};

Result<GatherGeometry> gather_geometry(const KernelRequest& request, const Shape& data, const Shape& indices,
                                       const Shape& gathered) {
  RN_ASSIGN_OR_RETURN(size_t axis, axis_of(request, static_cast<int64_t>(data.size())));
  Shape expected(data.begin(), data.begin() + static_cast<long>(axis));
  expected.insert(expected.end(), indices.begin(), indices.end());
  expected.insert(expected.end(), data.begin() + static_cast<long>(axis) + 1, data.end());
  if (expected != gathered)
    return bad(request.node->describe(), "gathering ", shape_str(indices), " from ", shape_str(data), " on axis ",
               axis, " gives ", shape_str(expected), ", the program says ", shape_str(gathered));
  return GatherGeometry{prod(data, 0, axis), data[axis], prod(data, axis + 1, data.size()), numel(indices)};
}

// Indices normalised to [0, dim); an error naming the first one out of range.
Status normalise_indices(const std::string& who, const Tensor* t, int64_t dim, std::vector<int64_t>* out) {
  RN_ASSIGN_OR_RETURN(*out, read_ints(who, t, "indices"));
  for (int64_t& i : *out) {
    if (i < -dim || i >= dim) return bad(who, "index ", i, " is out of range for a dim of ", dim);
    if (i < 0) i += dim;
  }
  return ok_status();
}

Result<std::unique_ptr<Kernel>> build_gather(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_same_dtype(request));
  RN_ASSIGN_OR_RETURN(GatherGeometry g, gather_geometry(request, input_shape(request, 0), input_shape(request, 1),
                                                        output_shape(request, 0)));
  const size_t row = static_cast<size_t>(g.inner) * dtype_size(request.inputs[0].dtype);
  const std::string who = request.node->describe();
  return make_kernel([=](const Tensors& in, const Tensors& out) -> Status {
    std::vector<int64_t> idx;
    RN_RETURN_IF_ERROR(normalise_indices(who, in[1], g.dim, &idx));
    const uint8_t* src = static_cast<const uint8_t*>(in[0]->raw());
    uint8_t* dst = static_cast<uint8_t*>(out[0]->raw());
    parallel_for(g.outer * g.count, g.inner, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t o = r / g.count, i = idx[static_cast<size_t>(r % g.count)];
        std::memcpy(dst + static_cast<size_t>(r) * row, src + static_cast<size_t>(o * g.dim + i) * row, row);
      }
    });
    return ok_status();
  });
}

// dX = 0; dX[o, idx[k], :] += dY[o, k, :] (repeated indices accumulate, in k order).
// Threads take (o, column block) pairs, one block per thread (the whole row when
// serial), so every element is summed by one thread in the serial order.
Result<std::unique_ptr<Kernel>> build_gather_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  RN_ASSIGN_OR_RETURN(GatherGeometry g, gather_geometry(request, output_shape(request, 0), input_shape(request, 1),
                                                        input_shape(request, 0)));
  const std::string who = request.node->describe();
  return make_kernel([=](const Tensors& in, const Tensors& out) -> Status {
    std::vector<int64_t> idx;
    RN_RETURN_IF_ERROR(normalise_indices(who, in[1], g.dim, &idx));
    const float* dy = in[0]->data<float>();
    float* dx = out[0]->data<float>();
    // Column blocks: whole cache lines (16 float32), as many as threads when the work is worth it.
    const int64_t lines = (g.inner + 15) / 16;
    const int64_t blocks =
        std::max<int64_t>(1, std::min<int64_t>(lines, parallel_threads(g.outer * (g.dim + g.count) * g.inner)));
    const int64_t cols = (lines + blocks - 1) / blocks * 16;
    parallel_for(g.outer * blocks, (g.dim + g.count) * std::min(cols, g.inner), [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t o = item / blocks, j0 = (item % blocks) * cols, n = std::min(cols, g.inner - j0);
        if (n <= 0) continue;
        float* base = dx + o * g.dim * g.inner + j0;
        for (int64_t i = 0; i < g.dim; ++i) std::fill(base + i * g.inner, base + i * g.inner + n, 0.0f);
        const float* src = dy + o * g.count * g.inner + j0;
        for (int64_t k = 0; k < g.count; ++k) {
          float* d = base + idx[static_cast<size_t>(k)] * g.inner;
          const float* s = src + k * g.inner;
          for (int64_t j = 0; j < n; ++j) d[j] += s[j];
        }
      }
    });
    return ok_status();
  });
}

// ---- Expand and Tile: broadcast copies ----

Result<std::unique_ptr<Kernel>> build_expand(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_same_dtype(request));
  const Shape x = input_shape(request, 0), y = output_shape(request, 0);
  Result<Shape> b = broadcast_shapes(x, y);
  if (!b.ok() || *b != y) return bad(request.node->describe(), shape_str(x), " does not expand to ", shape_str(y));
  const std::vector<int64_t> ys = contiguous_strides(y), xs = broadcast_strides(x, y);
  const size_t width = dtype_size(request.inputs[0].dtype);
  return make_kernel([=](const Tensors& in, const Tensors& out) -> Status {
    copy_strided_bytes(width, out[0]->raw(), in[0]->raw(), y, ys, xs);
    return ok_status();
  });
}

// Y viewed as [r0, d0, r1, d1, ...] reads X at [0, s0, 0, s1, ...].
Result<std::unique_ptr<Kernel>> build_tile(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_same_dtype(request));
  const Shape x = input_shape(request, 0), y = output_shape(request, 0);
  if (x.size() != y.size()) return bad(request.node->describe(), "input and output ranks differ");
  const std::vector<int64_t> xs = contiguous_strides(x);
  Shape view;
  std::vector<int64_t> src;
  for (size_t d = 0; d < x.size(); ++d) {
    if ((x[d] == 0 && y[d] != 0) || (x[d] != 0 && y[d] % x[d] != 0))
      return bad(request.node->describe(), shape_str(y), " is not a tiling of ", shape_str(x));
    view.push_back(x[d] == 0 ? 0 : y[d] / x[d]);
    view.push_back(x[d]);
    src.push_back(0);
    src.push_back(xs[d]);
  }
  const std::vector<int64_t> dense = contiguous_strides(view);
  const size_t width = dtype_size(request.inputs[0].dtype);
  return make_kernel([=](const Tensors& in, const Tensors& out) -> Status {
    copy_strided_bytes(width, out[0]->raw(), in[0]->raw(), view, dense, src);
    return ok_status();
  });
}

// ---- Pad (constant mode) ----

Result<std::unique_ptr<Kernel>> build_pad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 4, 1, 1));
  RN_RETURN_IF_ERROR(check_width(request, request.inputs[0].dtype));
  if (request.outputs[0].dtype != request.inputs[0].dtype) return decline(request, "output dtype differs");
  if (has_input(request, 2) && request.inputs[2].dtype != request.inputs[0].dtype)
    return decline(request, "constant_value's dtype differs from the input's");
  const std::string mode = request.node->attr_string("mode", "constant");
  if (mode != "constant") return decline(request, "mode '", mode, "' (only constant)");
  const Shape x = input_shape(request, 0), y = output_shape(request, 0);
  if (x.size() != y.size()) return bad(request.node->describe(), "input and output ranks differ");
  const size_t width = dtype_size(request.inputs[0].dtype);
  const std::string who = request.node->describe();
  return make_kernel([=](const Tensors& in, const Tensors& out) -> Status {
    const int64_t rank = static_cast<int64_t>(x.size());
    RN_ASSIGN_OR_RETURN(std::vector<int64_t> pads, read_ints(who, in[1], "pads"));
    std::vector<int64_t> axes(x.size());
    for (size_t i = 0; i < axes.size(); ++i) axes[i] = static_cast<int64_t>(i);
    if (in.size() > 3 && in[3]) {
      RN_ASSIGN_OR_RETURN(axes, read_ints(who, in[3], "axes"));
    }
    if (pads.size() != 2 * axes.size()) return bad(who, "pads has ", pads.size(), " values for ", axes.size(), " axes");
    std::vector<int64_t> begin(x.size(), 0);
    Shape expected = x;
    for (size_t i = 0; i < axes.size(); ++i) {
      if (axes[i] < -rank || axes[i] >= rank) return bad(who, "axis ", axes[i], " is out of range");
      const size_t a = static_cast<size_t>(axes[i] < 0 ? axes[i] + rank : axes[i]);
      begin[a] = pads[i];
      expected[a] += pads[i] + pads[i + axes.size()];
    }
    if (expected != y) return bad(who, "padding ", shape_str(x), " gives ", shape_str(expected), ", the program says ", shape_str(y));
    // Fill with the constant, then copy the overlap of input and output (negative pads crop).
    uint8_t* dst = static_cast<uint8_t*>(out[0]->raw());
    const uint8_t* src = static_cast<const uint8_t*>(in[0]->raw());
    uint8_t value[8] = {0};
    if (in.size() > 2 && in[2]) std::memcpy(value, in[2]->raw(), width);
    const int64_t n = out[0]->numel();
    by_width(width, [&](auto tag) {
      using T = decltype(tag);
      T v;
      std::memcpy(&v, value, sizeof(T));
      std::fill(reinterpret_cast<T*>(dst), reinterpret_cast<T*>(dst) + n, v);
    });
    const std::vector<int64_t> xs = contiguous_strides(x), ys = contiguous_strides(y);
    Shape region(x.size());
    int64_t src_off = 0, dst_off = 0;
    for (size_t d = 0; d < x.size(); ++d) {
      const int64_t lo = std::max<int64_t>(0, -begin[d]), hi = std::min<int64_t>(x[d], y[d] - begin[d]);
      region[d] = std::max<int64_t>(0, hi - lo);
      src_off += lo * xs[d];
      dst_off += (lo + begin[d]) * ys[d];
    }
    if (numel(region) > 0)
      copy_strided_bytes(width, dst + dst_off * static_cast<int64_t>(width), src + src_off * static_cast<int64_t>(width),
                         region, ys, xs);
    return ok_status();
  });
}

// ---- Cast ----

template <typename S, typename D>
void convert(const void* src, void* dst, int64_t n, bool to_bool) {
  const S* s = static_cast<const S*>(src);
  D* d = static_cast<D*>(dst);
  if (to_bool)
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<D>(s[i] != S(0));
  else
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<D>(s[i]);
}

// Calls fn(T{}) with the C++ type holding `dtype` (bool as uint8_t); false if unsupported.
template <typename Fn>
bool by_numeric_type(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32: fn(float{}); return true;
    case DType::kF64: fn(double{}); return true;
    case DType::kI64: fn(int64_t{}); return true;
    case DType::kI32: fn(int32_t{}); return true;
    case DType::kI8: fn(int8_t{}); return true;
    case DType::kU8: case DType::kBool: fn(uint8_t{}); return true;
    default: return false;
  }
}

Result<std::unique_ptr<Kernel>> build_cast(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 1, 1, 1, 1));
  const DType from = request.inputs[0].dtype, to = request.outputs[0].dtype;
  using ConvertFn = void (*)(const void*, void*, int64_t, bool);
  ConvertFn fn = nullptr;
  bool known = by_numeric_type(from, [&](auto s) {
    by_numeric_type(to, [&](auto d) { fn = &convert<decltype(s), decltype(d)>; });
  });
  if (!known || !fn) return decline(request, "cast from ", dtype_name(from), " to ", dtype_name(to));
  if (input_shape(request, 0) != output_shape(request, 0))
    return bad(request.node->describe(), "input and output shapes differ");
  const bool to_bool = to == DType::kBool;
  return make_kernel([=](const Tensors& in, const Tensors& out) -> Status {
    fn(in[0]->raw(), out[0]->raw(), in[0]->numel(), to_bool);
    return ok_status();
  });
}

// ---- Dropout ----

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  return h ^ (h >> 16);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// Keeps element i when its hash is >= threshold (= ratio * 2^32): the hash is two
// murmur3 finalisers keyed by the 64-bit run key and the high 32 bits of i, a
// bijection of the low 32 bits of i for each key, so any split of the index range
// over threads gives the same mask. Fills mask[i] for i in [begin, end).
void dropout_mask(uint64_t key, uint32_t threshold, int64_t begin, int64_t end, uint8_t* mask) {
  for (int64_t block = begin; block < end;) {
    const uint64_t hi = static_cast<uint64_t>(block) >> 32;
    const int64_t block_end = std::min<int64_t>(end, static_cast<int64_t>((hi + 1) << 32));
    const uint64_t k = splitmix64(key ^ hi);
    const uint32_t k0 = static_cast<uint32_t>(k), k1 = static_cast<uint32_t>(k >> 32);
    for (int64_t i = block; i < block_end; ++i) {
      uint32_t h = fmix32((static_cast<uint32_t>(i) * 0x9E3779B1u) ^ k0);
      h = fmix32(h ^ k1);
      mask[i] = h >= threshold;
    }
    block = block_end;
  }
}

float ratio_of(const Tensor* t) {
  if (!t) return 0.5f;
  if (t->dtype() == DType::kF64) return static_cast<float>(t->data<double>()[0]);
  return t->data<float>()[0];
}

class DropoutKernel final : public Kernel {
 public:
  DropoutKernel(std::string who, uint64_t name_hash) : who_(std::move(who)), name_hash_(name_hash) {}

  Status run(const Tensors& in, const Tensors& out) override { return run(in, out, RunContext{}); }

  Status run(const Tensors& in, const Tensors& out, const RunContext& context) override {
    const float ratio = ratio_of(in.size() > 1 ? in[1] : nullptr);
    if (!(ratio >= 0.0f && ratio < 1.0f)) return bad(who_, "ratio ", ratio, " is not in [0, 1)");
    const bool mode = in.size() > 2 && in[2] && in[2]->data<uint8_t>()[0] != 0;
    const int64_t n = in[0]->numel();
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    uint8_t* mask = out.size() > 1 && out[1] ? out[1]->data<uint8_t>() : nullptr;
    if (!context.training || !mode || ratio == 0.0f) {
      if (y != x) std::memcpy(y, x, static_cast<size_t>(n) * sizeof(float));
      if (mask) std::memset(mask, 1, static_cast<size_t>(n));
      return ok_status();
    }
    std::vector<uint8_t> scratch;
    if (!mask) {
      scratch.resize(static_cast<size_t>(n));
      mask = scratch.data();
    }
    uint64_t key = splitmix64(context.seed);
    key = splitmix64(key ^ static_cast<uint64_t>(context.step));
    key = splitmix64(key ^ static_cast<uint64_t>(context.microbatch));
    key = splitmix64(key ^ name_hash_);
    const double scaled = std::ldexp(static_cast<double>(ratio), 32);
    const uint32_t threshold = static_cast<uint32_t>(std::min(scaled, 4294967295.0));
    const float scale = 1.0f / (1.0f - ratio);
    parallel_for(n, 4, [&](int64_t begin, int64_t end) {
      dropout_mask(key, threshold, begin, end, mask);
      for (int64_t i = begin; i < end; ++i) y[i] = mask[i] ? x[i] * scale : 0.0f;
    });
    return ok_status();
  }

 private:
  std::string who_;
  uint64_t name_hash_;
};

Result<std::unique_ptr<Kernel>> build_dropout(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 1, 3, 1, 2));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  if (has_input(request, 1) && request.inputs[1].dtype != DType::kF32 && request.inputs[1].dtype != DType::kF64)
    return decline(request, "ratio is ", dtype_name(request.inputs[1].dtype));
  if (has_input(request, 2)) RN_RETURN_IF_ERROR(check_input_dtype(request, 2, DType::kBool));
  if (has_output(request, 1)) RN_RETURN_IF_ERROR(check_output_dtype(request, 1, DType::kBool));
  if (input_shape(request, 0) != output_shape(request, 0)) return bad(request.node->describe(), "Y's shape differs from X's");
  return std::unique_ptr<Kernel>(std::make_unique<DropoutKernel>(request.node->describe(), fnv1a(request.node->name)));
}

// dX = dY * mask / (1 - ratio).
Result<std::unique_ptr<Kernel>> build_dropout_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 1, DType::kBool));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  if (input_shape(request, 0) != input_shape(request, 1))
    return bad(request.node->describe(), "dY and mask shapes differ");
  const float ratio = request.node->attr_float("ratio", 0.5f);
  if (!(ratio >= 0.0f && ratio < 1.0f)) return bad(request.node->describe(), "ratio ", ratio, " is not in [0, 1)");
  const float scale = 1.0f / (1.0f - ratio);
  return make_kernel([=](const Tensors& in, const Tensors& out) -> Status {
    const float* dy = in[0]->data<float>();
    const uint8_t* mask = in[1]->data<uint8_t>();
    float* dx = out[0]->data<float>();
    const int64_t n = in[0]->numel();
    flat_for(n, [&](int64_t i) { dx[i] = mask[i] ? dy[i] * scale : 0.0f; });
    return ok_status();
  });
}

}  // namespace

void register_movement_kernels(KernelRegistry& registry) {
  registry.add("", "Concat", {"copy", Device::kCpu, build_concat});
  registry.add("", "Split", {"copy", Device::kCpu, build_split});
  registry.add("", "Slice", {"copy", Device::kCpu, build_slice});
  registry.add("", "Gather", {"copy", Device::kCpu, build_gather});
  registry.add("", "Expand", {"copy", Device::kCpu, build_expand});
  registry.add("", "Tile", {"copy", Device::kCpu, build_tile});
  registry.add("", "Pad", {"copy", Device::kCpu, build_pad});
  registry.add("", "Cast", {"ref", Device::kCpu, build_cast});
  registry.add("", "Dropout", {"ref", Device::kCpu, build_dropout});
  registry.add(kRavnestDomain, "SliceGrad", {"copy", Device::kCpu, build_slice_grad});
  registry.add(kRavnestDomain, "GatherGrad", {"ref", Device::kCpu, build_gather_grad});
  registry.add(kRavnestDomain, "DropoutGrad", {"ref", Device::kCpu, build_dropout_grad});
}

}  // namespace ravnest::rt::cpu
