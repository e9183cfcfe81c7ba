// Shape ops: Reshape, Flatten, Identity, Unsqueeze, Squeeze (a copy of the bytes
// unless the executor made the output alias the input, then nothing to do) and
// Transpose.
//
// Guarantees: the copy ops accept any dtype and require the output to hold as many
// elements as the input (their shape/axes input is a program constant and the output
// shape is already static, so it is not read at run time). Transpose permutes by
// `perm` (default: reversed dims) for 1-, 2-, 4- and 8-byte elements; when the
// output's innermost dim is not the input's innermost dim (the last-two-dims swap of
// attention and MatMul gradients, NCHW<->NHWC) it copies in cache-sized 2-D tiles so
// that both reads and writes stay within a few cache lines.
#include <algorithm>
#include <cstring>

#include "runtime/cpu/common.h"

namespace ravnest::rt::cpu {
namespace {

Result<std::unique_ptr<Kernel>> build_copy(const KernelRequest& request) {
  const size_t max_inputs = request.node->op == "Flatten" || request.node->op == "Identity" ? 1 : 2;
  RN_RETURN_IF_ERROR(check_arity(request, 1, max_inputs, 1, 1));
  const ValueInfo& in = request.inputs[0];
  const ValueInfo& out = request.outputs[0];
  if (in.dtype != out.dtype || dtype_size(in.dtype) == 0)
    return decline(request, "input is ", dtype_name(in.dtype), ", output is ", dtype_name(out.dtype));
  if (numel(in.static_shape()) != numel(out.static_shape()))
    return error(Code::kInvalidArgument, request.node->describe(), ": input ", in.shape_string(), " and output ",
                 out.shape_string(), " hold different numbers of elements");
  return make_kernel([](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    if (out[0]->raw() != in[0]->raw() && out[0]->bytes()) std::memcpy(out[0]->raw(), in[0]->raw(), out[0]->bytes());
    return ok_status();
  });
}

// The permutation as a copy plan over the output's dims, size-1 dims dropped:
// `shape` (output order), the output's and the input's strides per dim.
struct PermutePlan {
  Shape shape;
  std::vector<int64_t> dst_strides, src_strides;
};

PermutePlan plan_permute(const Shape& out, const std::vector<int64_t>& src_strides) {
  PermutePlan plan;
  const std::vector<int64_t> dst = contiguous_strides(out);
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == 1) continue;
    plan.shape.push_back(out[i]);
    plan.dst_strides.push_back(dst[i]);
    plan.src_strides.push_back(src_strides[i]);
  }
  return plan;
}

// Rows of the output that are also rows of the input: contiguous copies.
template <typename T>
void permute_rows(const T* src, T* dst, const PermutePlan& p) {
  parallel_for_each_strided<2>(p.shape, {p.dst_strides, p.src_strides}, [&](const auto& off, int64_t len, const auto& step) {
    T* d = dst + off[0];
    const T* s = src + off[1];
    if (step[0] == 1 && step[1] == 1) std::memcpy(d, s, static_cast<size_t>(len) * sizeof(T));
    else
      for (int64_t j = 0; j < len; ++j) d[j * step[0]] = s[j * step[1]];
  });
}

// dst[i * dst_stride + j] = src[i + j * src_stride] for i < rows, j < cols, in
// kTile x kTile blocks (one cache line of T per tile row).
template <typename T>
void transpose_2d(const T* src, T* dst, int64_t rows, int64_t cols, int64_t src_stride, int64_t dst_stride) {
  constexpr int64_t kTile = 64 / sizeof(T) < 8 ? 8 : 64 / sizeof(T);
  const int64_t row_tiles = (rows + kTile - 1) / kTile;
  // Threaded over row tiles when called alone (a call inside a parallel region stays serial).
  parallel_for(row_tiles, kTile * cols, [&](int64_t t_begin, int64_t t_end) {
    for (int64_t i0 = t_begin * kTile; i0 < std::min(rows, t_end * kTile); i0 += kTile) {
      const int64_t i1 = std::min(rows, i0 + kTile);
      for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
        const int64_t j1 = std::min(cols, j0 + kTile);
        for (int64_t i = i0; i < i1; ++i) {
          T* d = dst + i * dst_stride;
          const T* s = src + i;
          for (int64_t j = j0; j < j1; ++j) d[j] = s[j * src_stride];
        }
      }
    }
  });
}

// Output dim `a` reads the input's contiguous dim, the output's last dim `b` does
// not: every index of the other dims is one 2-D tile transpose of a x b.
template <typename T>
void permute_tiled(const T* src, T* dst, const PermutePlan& p, size_t a) {
  const size_t b = p.shape.size() - 1;
  PermutePlan outer;
  for (size_t i = 0; i < p.shape.size(); ++i) {
    if (i == a || i == b) continue;
    outer.shape.push_back(p.shape[i]);
    outer.dst_strides.push_back(p.dst_strides[i]);
    outer.src_strides.push_back(p.src_strides[i]);
  }
  const int64_t rows = p.shape[a], cols = p.shape[b];
  const int64_t src_stride = p.src_strides[b], dst_stride = p.dst_strides[a];
  parallel_for_each_strided<2>(outer.shape, {outer.dst_strides, outer.src_strides},
                      [&](const auto& off, int64_t len, const auto& step) {
                        for (int64_t k = 0; k < len; ++k)
                          transpose_2d(src + off[1] + k * step[1], dst + off[0] + k * step[0], rows, cols, src_stride,
                                       dst_stride);
                      },
                      rows * cols);
}

template <typename T>
void permute(const T* src, T* dst, const PermutePlan& p) {
  if (p.shape.size() >= 2 && p.src_strides.back() != 1) {
    for (size_t a = 0; a + 1 < p.shape.size(); ++a)
      if (p.src_strides[a] == 1) return permute_tiled(src, dst, p, a);
  }
  permute_rows(src, dst, p);
}

Result<std::unique_ptr<Kernel>> build_transpose(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 1, 1, 1, 1));
  const Shape in = input_shape(request, 0), out = output_shape(request, 0);
  const DType dtype = request.inputs[0].dtype;
  const size_t elem = dtype_size(dtype);
  if (elem != 1 && elem != 2 && elem != 4 && elem != 8) return decline(request, "dtype ", dtype_name(dtype));
  if (request.outputs[0].dtype != dtype) return decline(request, "output dtype differs from input dtype");
  std::vector<int64_t> perm(in.size());
  for (size_t i = 0; i < in.size(); ++i) perm[i] = static_cast<int64_t>(in.size() - 1 - i);
  perm = request.node->attr_ints("perm", perm);
  std::vector<bool> seen(in.size(), false);
  bool valid = perm.size() == in.size();
  for (int64_t p : perm) {
    if (!valid || p < 0 || p >= static_cast<int64_t>(in.size()) || seen[p]) {
      valid = false;
      break;
    }
    seen[p] = true;
  }
  if (!valid)
    return error(Code::kInvalidArgument, request.node->describe(), ": perm ", shape_str(perm),
                 " is not a permutation of ", in.size(), " dims");
  Shape expected(in.size());
  const std::vector<int64_t> in_strides = contiguous_strides(in);
  std::vector<int64_t> src_strides(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    expected[i] = in[perm[i]];
    src_strides[i] = in_strides[perm[i]];
  }
  if (expected != out)
    return error(Code::kInvalidArgument, request.node->describe(), ": transposing ", shape_str(in), " by ",
                 shape_str(perm), " gives ", shape_str(expected), ", the program says ", shape_str(out));
  const PermutePlan plan = plan_permute(out, src_strides);
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>& outs) -> Status {
    const void* s = in[0]->raw();
    void* d = outs[0]->raw();
    switch (elem) {
      case 1: permute(static_cast<const uint8_t*>(s), static_cast<uint8_t*>(d), plan); break;
      case 2: permute(static_cast<const uint16_t*>(s), static_cast<uint16_t*>(d), plan); break;
      case 4: permute(static_cast<const uint32_t*>(s), static_cast<uint32_t*>(d), plan); break;
      default: permute(static_cast<const uint64_t*>(s), static_cast<uint64_t*>(d), plan); break;
    }
    return ok_status();
  });
}

}  // namespace

void register_shape_kernels(KernelRegistry& registry) {
  for (const char* op : {"Reshape", "Flatten", "Identity", "Unsqueeze", "Squeeze"})
    registry.add("", op, {"copy", Device::kCpu, build_copy});
  registry.add("", "Transpose", {"tiled", Device::kCpu, build_transpose});
}

}  // namespace ravnest::rt::cpu
