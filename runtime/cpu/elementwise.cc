// Sum (n-ary, same shapes), ReduceSum and ReduceMean (axes as an optional second
// input (ReduceSum 13+, ReduceMean 18+) or as the attribute `axes` (ReduceMean
// 13-17), keepdims, noop_with_empty_axes), float32. Add and the other binary ops
// live in math.cc.
//
// Guarantees: Sum equals the float32 loop sum in input order; the reductions read
// an axes input at run time (a program constant, so the same every run) and check
// that it yields the program's static output shape. A reduction over the innermost
// contiguous run accumulates in 8 interleaved float32 partial sums (vectorised);
// ReduceMean multiplies the sum by 1/count. When the reduced axes are one block
// (X as [A, R, B], Y as [A, B]: the bias gradients, a mean over the last axes) the
// outputs are split between OpenMP threads; each output is summed by one thread in
// the same order as the serial walk, so results do not depend on the thread count.
#include <algorithm>

#include "runtime/cpu/common.h"

namespace ravnest::rt::cpu {
namespace {

Result<std::unique_ptr<Kernel>> build_sum(const KernelRequest& request) {
  const size_t n_inputs = request.inputs.size();
  RN_RETURN_IF_ERROR(check_arity(request, 1, std::max<size_t>(n_inputs, 1), 1, 1));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  for (size_t i = 0; i < n_inputs; ++i) {
    RN_RETURN_IF_ERROR(check_input_dtype(request, i, DType::kF32));
    if (input_shape(request, i) != output_shape(request, 0))
      return decline(request, "input ", i, " is ", shape_str(input_shape(request, i)), " and the output ",
                     shape_str(output_shape(request, 0)), ": this kernel sums same-shape inputs only");
  }
  return make_kernel([](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    float* y = out[0]->data<float>();
    const int64_t n = out[0]->numel();
    parallel_for(n, static_cast<int64_t>(in.size()), [&](int64_t begin, int64_t end) {
      const float* first = in[0]->data<float>();
      if (first != y) std::copy(first + begin, first + end, y + begin);
      for (size_t i = 1; i < in.size(); ++i) {
        const float* x = in[i]->data<float>();
        for (int64_t j = begin; j < end; ++j) y[j] += x[j];
      }
    });
    return ok_status();
  });
}

// Adds the `len` strided elements at s to the output run at d (step 0: one scalar).
inline void reduce_row(float* d, const float* s, int64_t len, int64_t d_step, int64_t s_step) {
  if (d_step == 0 && s_step == 1) {
    constexpr int64_t kLanes = 8;
    float acc[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= len; j += kLanes)
      for (int64_t l = 0; l < kLanes; ++l) acc[l] += s[j + l];
    float total = 0.0f;
    for (int64_t l = 0; l < kLanes; ++l) total += acc[l];
    for (; j < len; ++j) total += s[j];
    *d += total;
  } else if (d_step == 0) {
    float acc = 0.0f;
    for (int64_t j = 0; j < len; ++j) acc += s[j * s_step];
    *d += acc;
  } else if (d_step == 1 && s_step == 1) {
    for (int64_t j = 0; j < len; ++j) d[j] += s[j];
  } else {
    for (int64_t j = 0; j < len; ++j) d[j * d_step] += s[j * s_step];
  }
}

// X as [A, R, B] when the reduced dims of size > 1 are adjacent; false otherwise.
bool as_block(const Shape& x, const std::vector<bool>& reduce, int64_t* a, int64_t* r, int64_t* b) {
  int64_t first = -1, last = -1;
  for (size_t d = 0; d < x.size(); ++d)
    if (reduce[d] && x[d] > 1) {
      if (first < 0) first = static_cast<int64_t>(d);
      last = static_cast<int64_t>(d);
    }
  if (first < 0) return false;
  *a = *r = *b = 1;
  for (size_t d = 0; d < x.size(); ++d) {
    const int64_t i = static_cast<int64_t>(d);
    if (i >= first && i <= last && !reduce[d] && x[d] > 1) return false;
    (i < first ? *a : i <= last ? *r : *b) *= x[d];
  }
  return true;
}

// Y[a, b] = sum_r X[a, r, b] (Y zeroed), threaded over rows a (and column blocks of B).
void reduce_block(float* y, const float* x, int64_t a, int64_t r, int64_t b) {
  if (b == 1) {
    parallel_for(a, r, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) reduce_row(y + i, x + i * r, r, 0, 1);
    });
    return;
  }
  constexpr int64_t kCols = 512;
  const int64_t blocks = (b + kCols - 1) / kCols;
  parallel_for(a * blocks, r * std::min(b, kCols), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item / blocks, j0 = (item % blocks) * kCols, n = std::min(kCols, b - j0);
      float* d = y + i * b + j0;
      for (int64_t k = 0; k < r; ++k) reduce_row(d, x + (i * r + k) * b + j0, n, 1, 1);
    }
  });
}

Result<std::unique_ptr<Kernel>> build_reduce(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 1, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  const bool from_input = has_input(request, 1);
  if (from_input) RN_RETURN_IF_ERROR(check_input_dtype(request, 1, DType::kI64));
  if (from_input && request.node->has_attr("axes"))
    return error(Code::kInvalidArgument, request.node->describe(), ": axes given both as an input and an attribute");
  const std::vector<int64_t> attr_axes = request.node->attr_ints("axes");
  const bool mean = request.node->op == "ReduceMean";
  const Shape x = input_shape(request, 0), y = output_shape(request, 0);
  const bool keepdims = request.node->attr_int("keepdims", 1) != 0;
  const bool noop_empty = request.node->attr_int("noop_with_empty_axes", 0) != 0;
  const std::string who = request.node->describe();
  const std::vector<int64_t> xs = contiguous_strides(x);
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const int64_t rank = static_cast<int64_t>(x.size());
    std::vector<bool> reduce(x.size(), false);
    std::vector<int64_t> axes = attr_axes;
    if (from_input) axes.assign(in[1]->data<int64_t>(), in[1]->data<int64_t>() + in[1]->numel());
    for (int64_t axis : axes) {
      if (axis < -rank || axis >= rank)
        return error(Code::kInvalidArgument, who, ": axis ", axis, " is out of range for input ", shape_str(x));
      reduce[axis < 0 ? axis + rank : axis] = true;
    }
    if (axes.empty() && !noop_empty) std::fill(reduce.begin(), reduce.end(), true);
    // Output strides laid over the input's index space: 0 along reduced axes.
    Shape kept;
    int64_t count = 1;
    for (size_t d = 0; d < x.size(); ++d) {
      if (reduce[d]) count *= x[d];
      if (!reduce[d] || keepdims) kept.push_back(reduce[d] ? 1 : x[d]);
    }
    if (kept != y)
      return error(Code::kInvalidArgument, who, ": reducing ", shape_str(x), " gives ", shape_str(kept),
                   ", the program says ", shape_str(y));
    std::vector<int64_t> ys(x.size(), 0);
    int64_t stride = 1;
    for (size_t d = x.size(); d-- > 0;) {
      if (reduce[d]) continue;
      ys[d] = stride;
      stride *= x[d];
    }
    float* py = out[0]->data<float>();
    const float* px = in[0]->data<float>();
    const int64_t n_out = out[0]->numel();
    std::fill(py, py + n_out, 0.0f);
    int64_t a = 1, r = 1, b = 1;
    if (as_block(x, reduce, &a, &r, &b)) {
      reduce_block(py, px, a, r, b);
    } else {
      for_each_strided<2>(x, {ys, xs}, [&](const auto& off, int64_t len, const auto& step) {
        reduce_row(py + off[0], px + off[1], len, step[0], step[1]);
      });
    }
    if (mean && count > 0) {
      const float inv = 1.0f / static_cast<float>(count);
      for (int64_t i = 0; i < n_out; ++i) py[i] *= inv;
    }
    return ok_status();
  });
}

}  // namespace

void register_elementwise_kernels(KernelRegistry& registry) {
  registry.add("", "Sum", {"ref", Device::kCpu, build_sum});
  registry.add("", "ReduceSum", {"ref", Device::kCpu, build_reduce});
  registry.add("", "ReduceMean", {"ref", Device::kCpu, build_reduce});
}

}  // namespace ravnest::rt::cpu
