// ai.ravnest optimizer ops: in-place updates of one parameter and its state
// (docs/training-ops.md, "Optimizers").
//
// Guarantees:
//  * SGD: with g' = grad + weight_decay * param, v = momentum * v + g',
//    param -= lr * (nesterov ? g' + momentum * v : v). Mutates param and
//    velocity; velocity may be omitted only when momentum is 0.
//  * AdamW (Loshchilov & Hutter; the arithmetic of torch.optim.AdamW):
//    t += 1; param *= 1 - lr * weight_decay; m = b1 m + (1 - b1) g;
//    v = b2 v + (1 - b2) g^2; param -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
//  * LAMB (You et al. 2019, Algorithm 2): the Adam moments as AdamW, then
//    r = m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * param and
//    param -= lr * trust * r with trust = ||param|| / ||r|| over the whole tensor
//    (1 when either norm is 0). Norms are summed in double.
//  * Adam-family state: exp_avg, exp_avg_sq (param's shape, float32) and step
//    (int64 scalar, the updates applied so far), all mutated in place.
// lr is read from its scalar tensor on every run: schedules change it.
#include <cmath>

#include "runtime/cpu/common.h"

namespace ravnest::rt::cpu {
namespace {

// param, grad and the state inputs in `same_shape` must agree with param; lr must be a scalar.
Status check_update_shapes(const KernelRequest& request, std::initializer_list<size_t> same_shape, size_t lr_input) {
  const Shape param = input_shape(request, 0);
  for (size_t i : same_shape)
    if (input_shape(request, i) != param)
      return error(Code::kInvalidArgument, request.node->describe(), ": input ", i, " has shape ",
                   shape_str(input_shape(request, i)), ", but the parameter has ", shape_str(param));
  if (numel(input_shape(request, lr_input)) != 1)
    return error(Code::kInvalidArgument, request.node->describe(), ": lr must be a scalar, has shape ",
                 shape_str(input_shape(request, lr_input)));
  return ok_status();
}

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
  if (with_velocity) {
    RN_RETURN_IF_ERROR(check_update_shapes(request, {1, 2}, 3));
  } else {
    RN_RETURN_IF_ERROR(check_update_shapes(request, {1}, 3));
  }
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>&) -> Status {
    float* p = in[0]->data<float>();
    const float* g = in[1]->data<float>();
    float* v = with_velocity ? in[2]->data<float>() : nullptr;
    const float lr = in[3]->data<float>()[0];
    const int64_t n = in[0]->numel();
    if (!v) {
      flat_for(n, [&](int64_t i) { p[i] -= lr * (g[i] + weight_decay * p[i]); });
      return ok_status();
    }
    flat_for(n, [&](int64_t i) {
      const float gd = g[i] + weight_decay * p[i];
      v[i] = momentum * v[i] + gd;
      p[i] -= lr * (nesterov ? gd + momentum * v[i] : v[i]);
    });
    return ok_status();
  });
}

// The Adam family's inputs: 0 param, 1 grad, 2 exp_avg, 3 exp_avg_sq, 4 step (int64 scalar), 5 lr.
struct AdamState {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t n;
  float lr;
  double bias1, bias2;  // 1 - beta^t after this update's t
};

struct AdamAttrs {
  float beta1, beta2, eps, weight_decay;
};

// Checks the inputs and reads the attributes shared by AdamW and LAMB.
Result<AdamAttrs> check_adam(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 6, 6, 0, 0));
  for (size_t i : {0, 1, 2, 3, 5}) RN_RETURN_IF_ERROR(check_input_dtype(request, i, DType::kF32));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 4, DType::kI64));
  RN_RETURN_IF_ERROR(check_update_shapes(request, {1, 2, 3}, 5));
  if (numel(input_shape(request, 4)) != 1)
    return error(Code::kInvalidArgument, request.node->describe(), ": step must be an int64 scalar, has shape ",
                 shape_str(input_shape(request, 4)));
  const Node& node = *request.node;
  AdamAttrs a{node.attr_float("beta1", 0.9f), node.attr_float("beta2", 0.999f), node.attr_float("epsilon", 1e-8f),
              node.attr_float("weight_decay", 0.0f)};
  if (!(a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1 && a.eps > 0 && a.weight_decay >= 0))
    return error(Code::kInvalidArgument, node.describe(), ": beta1 ", a.beta1, ", beta2 ", a.beta2, ", epsilon ", a.eps,
                 ", weight_decay ", a.weight_decay, " are out of range (betas in [0, 1), epsilon > 0, decay >= 0)");
  return a;
}

// Counts this update in the step input; the moments are updated by adam_moment.
AdamState adam_step(const std::vector<Tensor*>& in, const AdamAttrs& a) {
  const int64_t t = ++in[4]->data<int64_t>()[0];
  return AdamState{in[0]->data<float>(), in[1]->data<float>(), in[2]->data<float>(), in[3]->data<float>(),
                   in[0]->numel(), in[5]->data<float>()[0],
                   1.0 - std::pow(static_cast<double>(a.beta1), static_cast<double>(t)),
                   1.0 - std::pow(static_cast<double>(a.beta2), static_cast<double>(t))};
}

// Both moments of element i, in place.
inline void adam_moment(const AdamState& s, const AdamAttrs& a, int64_t i) {
  const float g = s.grad[i];
  s.exp_avg[i] = a.beta1 * s.exp_avg[i] + (1.0f - a.beta1) * g;
  s.exp_avg_sq[i] = a.beta2 * s.exp_avg_sq[i] + (1.0f - a.beta2) * g * g;
}

Result<std::unique_ptr<Kernel>> build_adamw(const KernelRequest& request) {
  RN_ASSIGN_OR_RETURN(AdamAttrs a, check_adam(request));
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>&) -> Status {
    // Decoupled weight decay uses the weights before this update, as PyTorch does.
    // One pass per element: decay, moments, update (each element's arithmetic as in three passes).
    const float decay = 1.0f - in[5]->data<float>()[0] * a.weight_decay;
    const AdamState s = adam_step(in, a);
    const float step_size = static_cast<float>(s.lr / s.bias1);
    const float bias2_sqrt = static_cast<float>(std::sqrt(s.bias2));
    flat_for(s.n, [&](int64_t i) {
      s.param[i] *= decay;
      adam_moment(s, a, i);
      s.param[i] -= step_size * s.exp_avg[i] / (std::sqrt(s.exp_avg_sq[i]) / bias2_sqrt + a.eps);
    });
    return ok_status();
  });
}

Result<std::unique_ptr<Kernel>> build_lamb(const KernelRequest& request) {
  RN_ASSIGN_OR_RETURN(AdamAttrs a, check_adam(request));
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>&) -> Status {
    const AdamState s = adam_step(in, a);
    flat_for(s.n, [&](int64_t i) { adam_moment(s, a, i); });
    const float inv_bias1 = static_cast<float>(1.0 / s.bias1), inv_bias2 = static_cast<float>(1.0 / s.bias2);
    auto update = [&](int64_t i) {
      return s.exp_avg[i] * inv_bias1 / (std::sqrt(s.exp_avg_sq[i] * inv_bias2) + a.eps) + a.weight_decay * s.param[i];
    };
    // Pass 1: the norms of the weights and of the update; pass 2: the scaled update.
    double w2 = 0, u2 = 0;
    for (int64_t i = 0; i < s.n; ++i) {
      const double u = update(i);
      w2 += static_cast<double>(s.param[i]) * s.param[i];
      u2 += u * u;
    }
    const double trust = w2 > 0 && u2 > 0 ? std::sqrt(w2) / std::sqrt(u2) : 1.0;
    const float step = static_cast<float>(s.lr * trust);
    flat_for(s.n, [&](int64_t i) { s.param[i] -= step * update(i); });
    return ok_status();
  });
}

}  // namespace

void register_optimizer_kernels(KernelRegistry& registry) {
  registry.add(kRavnestDomain, "SGD", {"ref", Device::kCpu, build_sgd});
  registry.add(kRavnestDomain, "AdamW", {"ref", Device::kCpu, build_adamw});
  registry.add(kRavnestDomain, "LAMB", {"ref", Device::kCpu, build_lamb});
}

}  // namespace ravnest::rt::cpu
