// Add (numpy broadcasting), Sum (n-ary, same shapes) and ReduceSum (opset 13:
// axes as an optional second input, keepdims, noop_with_empty_axes), float32.
//
// Guarantees: results equal the float32 loop sum in row-major order of the inputs;
// ReduceSum reads its axes tensor at run time (a program constant, so the same
// every run) and checks that it yields the program's static output shape.
#include <algorithm>

#include "runtime/cpu/common.h"

namespace ravnest::rt::cpu {
namespace {

Result<std::unique_ptr<Kernel>> build_add(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 1, DType::kF32));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  const Shape a = input_shape(request, 0), b = input_shape(request, 1), y = output_shape(request, 0);
  Result<Shape> expected = broadcast_shapes(a, b);
  if (!expected.ok()) return expected.status().with_context(request.node->describe());
  if (*expected != y)
    return error(Code::kInvalidArgument, request.node->describe(), ": ", shape_str(a), " + ", shape_str(b),
                 " gives ", shape_str(*expected), ", the program says ", shape_str(y));
  const std::vector<int64_t> ys = contiguous_strides(y), as = broadcast_strides(a, y), bs = broadcast_strides(b, y);
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* pa = in[0]->data<float>();
    const float* pb = in[1]->data<float>();
    float* py = out[0]->data<float>();
    for_each_strided<3>(y, {ys, as, bs}, [&](const auto& off, int64_t len, const auto& step) {
      float* d = py + off[0];
      const float* s0 = pa + off[1];
      const float* s1 = pb + off[2];
      if (step[1] == 1 && step[2] == 1) {
        for (int64_t j = 0; j < len; ++j) d[j] = s0[j] + s1[j];
      } else if (step[1] == 1 && step[2] == 0) {
        for (int64_t j = 0; j < len; ++j) d[j] = s0[j] + *s1;
      } else {
        for (int64_t j = 0; j < len; ++j) d[j] = s0[j * step[1]] + s1[j * step[2]];
      }
    });
    return ok_status();
  });
}

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
    const float* first = in[0]->data<float>();
    if (first != y) std::copy(first, first + n, y);
    for (size_t i = 1; i < in.size(); ++i) {
      const float* x = in[i]->data<float>();
      for (int64_t j = 0; j < n; ++j) y[j] += x[j];
    }
    return ok_status();
  });
}

Result<std::unique_ptr<Kernel>> build_reduce_sum(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 1, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  if (has_input(request, 1)) RN_RETURN_IF_ERROR(check_input_dtype(request, 1, DType::kI64));
  if (request.node->has_attr("axes"))
    return decline(request, "axes as an attribute (opset < 13); the compiler emits axes as an input");
  const Shape x = input_shape(request, 0), y = output_shape(request, 0);
  const bool keepdims = request.node->attr_int("keepdims", 1) != 0;
  const bool noop_empty = request.node->attr_int("noop_with_empty_axes", 0) != 0;
  const std::string who = request.node->describe();
  const std::vector<int64_t> xs = contiguous_strides(x);
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const int64_t rank = static_cast<int64_t>(x.size());
    std::vector<bool> reduce(x.size(), false);
    const int64_t n_axes = in.size() > 1 && in[1] ? in[1]->numel() : 0;
    for (int64_t i = 0; i < n_axes; ++i) {
      int64_t axis = in[1]->data<int64_t>()[i];
      if (axis < -rank || axis >= rank)
        return error(Code::kInvalidArgument, who, ": axis ", axis, " is out of range for input ", shape_str(x));
      reduce[axis < 0 ? axis + rank : axis] = true;
    }
    if (n_axes == 0 && !noop_empty) std::fill(reduce.begin(), reduce.end(), true);
    // Output strides laid over the input's index space: 0 along reduced axes.
    Shape kept;
    for (size_t d = 0; d < x.size(); ++d)
      if (!reduce[d] || keepdims) kept.push_back(reduce[d] ? 1 : x[d]);
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
    std::fill(py, py + out[0]->numel(), 0.0f);
    for_each_strided<2>(x, {ys, xs}, [&](const auto& off, int64_t len, const auto& step) {
      float* d = py + off[0];
      const float* s = px + off[1];
      if (step[0] == 0) {
        float acc = 0.0f;
        for (int64_t j = 0; j < len; ++j) acc += s[j * step[1]];
        *d += acc;
      } else {
        for (int64_t j = 0; j < len; ++j) d[j * step[0]] += s[j * step[1]];
      }
    });
    return ok_status();
  });
}

}  // namespace

void register_elementwise_kernels(KernelRegistry& registry) {
  registry.add("", "Add", {"ref", Device::kCpu, build_add});
  registry.add("", "Sum", {"ref", Device::kCpu, build_sum});
  registry.add("", "ReduceSum", {"ref", Device::kCpu, build_reduce_sum});
}

}  // namespace ravnest::rt::cpu
