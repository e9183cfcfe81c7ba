// ai.ravnest.SGD: the in-place SGD update of one parameter.
//
// Guarantees (docs/training-ops.md): with g' = grad + weight_decay * param,
// v = momentum * v + g', param -= lr * (nesterov ? g' + momentum * v : v).
// Mutates input 0 (param) and input 2 (velocity); velocity may be omitted only when
// momentum is 0. lr is read from its scalar tensor every run (schedules change it).
#include "runtime/cpu/common.h"

namespace ravnest::rt::cpu {
namespace {

Result<std::unique_ptr<Kernel>> build_sgd(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 4, 0, 0));
  if (!has_input(request, 3)) return decline(request, "input 3 (lr) is required");
  const Node& node = *request.node;
  const float momentum = node.attr_float("momentum", 0.0f);
  const float weight_decay = node.attr_float("weight_decay", 0.0f);
  const bool nesterov = node.attr_int("nesterov", 0) != 0;
  const bool with_velocity = has_input(request, 2);
  for (size_t i : {0, 1, 3}) RN_RETURN_IF_ERROR(check_input_dtype(request, i, DType::kF32));
  if (with_velocity) RN_RETURN_IF_ERROR(check_input_dtype(request, 2, DType::kF32));
  if (!with_velocity && momentum != 0.0f)
    return error(Code::kInvalidArgument, node.describe(), ": momentum ", momentum, " needs a velocity input");
  const Shape param = input_shape(request, 0);
  if (input_shape(request, 1) != param || (with_velocity && input_shape(request, 2) != param) ||
      numel(input_shape(request, 3)) != 1)
    return error(Code::kInvalidArgument, node.describe(), ": param ", shape_str(param), ", grad ",
                 shape_str(input_shape(request, 1)), ", velocity and a scalar lr must agree");
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>&) -> Status {
    float* p = in[0]->data<float>();
    const float* g = in[1]->data<float>();
    float* v = with_velocity ? in[2]->data<float>() : nullptr;
    const float lr = in[3]->data<float>()[0];
    const int64_t n = in[0]->numel();
    if (!v) {
      for (int64_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + weight_decay * p[i]);
      return ok_status();
    }
    for (int64_t i = 0; i < n; ++i) {
      const float gd = g[i] + weight_decay * p[i];
      v[i] = momentum * v[i] + gd;
      p[i] -= lr * (nesterov ? gd + momentum * v[i] : v[i]);
    }
    return ok_status();
  });
}

}  // namespace

void register_optimizer_kernels(KernelRegistry& registry) {
  registry.add(kRavnestDomain, "SGD", {"ref", Device::kCpu, build_sgd});
}

}  // namespace ravnest::rt::cpu
