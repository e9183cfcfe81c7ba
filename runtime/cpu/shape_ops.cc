// Shape ops: Reshape, Flatten, Identity (a copy of the bytes unless the executor
// made the output alias the input, then nothing to do) and Transpose.
//
// Guarantees: Reshape/Flatten/Identity accept any dtype and require the output to
// hold as many elements as the input (Reshape's shape input is a program constant
// and the output shape is already static, so it is not read at run time).
// Transpose permutes by `perm` (default: reversed dims) for 1-, 2-, 4- and 8-byte
// elements.
#include <cstring>

#include "runtime/cpu/common.h"

namespace ravnest::rt::cpu {
namespace {

Result<std::unique_ptr<Kernel>> build_copy(const KernelRequest& request) {
  const size_t max_inputs = request.node->op == "Reshape" ? 2 : 1;
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

template <typename T>
void permute(const T* src, T* dst, const Shape& out_shape, const std::vector<int64_t>& src_strides) {
  for_each_strided<2>(out_shape, {contiguous_strides(out_shape), src_strides},
                      [&](const auto& off, int64_t len, const auto& step) {
                        for (int64_t j = 0; j < len; ++j) dst[off[0] + j * step[0]] = src[off[1] + j * step[1]];
                      });
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
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>& outs) -> Status {
    const void* s = in[0]->raw();
    void* d = outs[0]->raw();
    switch (elem) {
      case 1: permute(static_cast<const uint8_t*>(s), static_cast<uint8_t*>(d), out, src_strides); break;
      case 2: permute(static_cast<const uint16_t*>(s), static_cast<uint16_t*>(d), out, src_strides); break;
      case 4: permute(static_cast<const uint32_t*>(s), static_cast<uint32_t*>(d), out, src_strides); break;
      default: permute(static_cast<const uint64_t*>(s), static_cast<uint64_t*>(d), out, src_strides); break;
    }
    return ok_status();
  });
}

}  // namespace

void register_shape_kernels(KernelRegistry& registry) {
  for (const char* op : {"Reshape", "Flatten", "Identity"}) registry.add("", op, {"copy", Device::kCpu, build_copy});
  registry.add("", "Transpose", {"ref", Device::kCpu, build_transpose});
}

}  // namespace ravnest::rt::cpu
