// Argument checks and shape helpers shared by the CPU kernel families.
#include "runtime/cpu/common.h"

#include <algorithm>

namespace ravnest::rt::cpu {

bool has_input(const KernelRequest& request, size_t i) {
  return i < request.node->inputs.size() && !request.node->inputs[i].empty();
}

bool has_output(const KernelRequest& request, size_t i) {
  return i < request.node->outputs.size() && !request.node->outputs[i].empty();
}

Status check_arity(const KernelRequest& request, size_t min_inputs, size_t max_inputs, size_t min_outputs,
                   size_t max_outputs) {
  const size_t n_in = request.inputs.size();
  const size_t n_out = request.outputs.size();
  if (n_in < min_inputs || n_in > max_inputs)
    return decline(request, "takes ", min_inputs, "..", max_inputs, " inputs, got ", n_in);
  if (n_out < min_outputs || n_out > max_outputs)
    return decline(request, "has ", min_outputs, "..", max_outputs, " outputs, got ", n_out);
  for (size_t i = 0; i < min_inputs; ++i)
    if (!has_input(request, i)) return decline(request, "input ", i, " is required but omitted");
  for (size_t i = 0; i < min_outputs; ++i)
    if (!has_output(request, i)) return decline(request, "output ", i, " is required but omitted");
  return ok_status();
}

namespace {
Status check_dtype(const KernelRequest& request, const std::vector<ValueInfo>& infos, size_t i, DType dtype,
                   const char* what) {
  if (i >= infos.size()) return decline(request, what, " ", i, " is missing");
  const ValueInfo& info = infos[i];
  if (info.dtype != dtype)
    return decline(request, what, " ", i, " '", info.name, "' is ", dtype_name(info.dtype), ", this kernel takes ",
                   dtype_name(dtype));
  if (!info.is_static()) return decline(request, what, " ", i, " '", info.name, "' has no static shape");
  return ok_status();
}
}  // namespace

Status check_input_dtype(const KernelRequest& request, size_t i, DType dtype) {
  return check_dtype(request, request.inputs, i, dtype, "input");
}

Status check_output_dtype(const KernelRequest& request, size_t i, DType dtype) {
  return check_dtype(request, request.outputs, i, dtype, "output");
}

Shape input_shape(const KernelRequest& request, size_t i) { return request.inputs[i].static_shape(); }
Shape output_shape(const KernelRequest& request, size_t i) { return request.outputs[i].static_shape(); }

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out) {
  std::vector<int64_t> dense = contiguous_strides(in);
  std::vector<int64_t> strides(out.size(), 0);
  const size_t lead = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) strides[lead + i] = (in[i] == 1 && out[lead + i] != 1) ? 0 : dense[i];
  return strides;
}

Result<Shape> broadcast_shapes(const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1)
      return error(Code::kInvalidArgument, "shapes ", shape_str(a), " and ", shape_str(b),
                   " do not broadcast (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace ravnest::rt::cpu
