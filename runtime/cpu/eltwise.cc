// Relu and ReluGrad: oneDNN eltwise primitives first, plain loops as the reference.
//
// Guarantees: Relu Y = max(X, 0); ReluGrad dX = dY where Y > 0 else 0, computed from
// the forward output Y (oneDNN's eltwise_relu_use_dst_for_bwd), so B work need not
// stash X. Tensors of any rank are treated as flat arrays.
#include "runtime/cpu/common.h"
#include "runtime/cpu/onednn.h"

namespace ravnest::rt::cpu {
namespace {

using dnnl::memory;

memory::desc flat_desc(int64_t n) { return memory::desc({n}, memory::data_type::f32, memory::format_tag::x); }

Status check_same_f32(const KernelRequest& request, size_t n_inputs) {
  RN_RETURN_IF_ERROR(check_arity(request, n_inputs, n_inputs, 1, 1));
  for (size_t i = 0; i < n_inputs; ++i) {
    RN_RETURN_IF_ERROR(check_input_dtype(request, i, DType::kF32));
    if (input_shape(request, i) != output_shape(request, 0))
      return error(Code::kInvalidArgument, request.node->describe(), ": input ", i, " is ",
                   shape_str(input_shape(request, i)), " but the output is ", shape_str(output_shape(request, 0)));
  }
  return check_output_dtype(request, 0, DType::kF32);
}

dnnl::eltwise_forward::primitive_desc relu_forward_pd(int64_t n, dnnl::algorithm alg) {
  dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_training, alg, flat_desc(n), 0.0f, 0.0f);
  return dnnl::eltwise_forward::primitive_desc(desc, engine());
}

Result<std::unique_ptr<Kernel>> build_relu_onednn(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_same_f32(request, 1));
  const int64_t n = numel(output_shape(request, 0));
  if (n == 0) return decline(request, "empty tensor");
  std::unique_ptr<Kernel> kernel;
  RN_RETURN_IF_ERROR(onednn_guard(request.node->describe(), [&]() -> Status {
    auto pd = relu_forward_pd(n, dnnl::algorithm::eltwise_relu);
    kernel = std::make_unique<OnednnPrimitiveKernel>(dnnl::eltwise_forward(pd), flat_desc(n),
                                                     std::vector<int>{DNNL_ARG_SRC, DNNL_ARG_DST}, "Relu");
    return ok_status();
  }));
  return kernel;
}

Result<std::unique_ptr<Kernel>> build_relu_grad_onednn(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_same_f32(request, 2));
  const int64_t n = numel(output_shape(request, 0));
  if (n == 0) return decline(request, "empty tensor");
  std::unique_ptr<Kernel> kernel;
  RN_RETURN_IF_ERROR(onednn_guard(request.node->describe(), [&]() -> Status {
    const auto alg = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
    auto hint = relu_forward_pd(n, alg);
    dnnl::eltwise_backward::desc desc(alg, flat_desc(n), flat_desc(n), 0.0f, 0.0f);
    dnnl::eltwise_backward::primitive_desc pd(desc, engine(), hint);
    kernel = std::make_unique<OnednnPrimitiveKernel>(
        dnnl::eltwise_backward(pd), flat_desc(n), std::vector<int>{DNNL_ARG_DIFF_DST, DNNL_ARG_DST, DNNL_ARG_DIFF_SRC},
        "ReluGrad");
    return ok_status();
  }));
  return kernel;
}

Result<std::unique_ptr<Kernel>> build_relu_ref(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_same_f32(request, 1));
  return make_kernel([](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    const int64_t n = out[0]->numel();
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return ok_status();
  });
}

Result<std::unique_ptr<Kernel>> build_relu_grad_ref(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_same_f32(request, 2));
  return make_kernel([](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* dy = in[0]->data<float>();
    const float* y = in[1]->data<float>();
    float* dx = out[0]->data<float>();
    const int64_t n = out[0]->numel();
    for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    return ok_status();
  });
}

}  // namespace

void register_eltwise_kernels(KernelRegistry& registry) {
  registry.add("", "Relu", {"onednn", Device::kCpu, build_relu_onednn});
  registry.add("", "Relu", {"ref", Device::kCpu, build_relu_ref});
  registry.add(kRavnestDomain, "ReluGrad", {"onednn", Device::kCpu, build_relu_grad_onednn});
  registry.add(kRavnestDomain, "ReluGrad", {"ref", Device::kCpu, build_relu_grad_ref});
}

}  // namespace ravnest::rt::cpu
