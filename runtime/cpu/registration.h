// The CPU kernel families and the one function that registers them all.
//
// Guarantees: register_all_kernels adds, for every op of docs/training-ops.md (and
// Transpose, used by gradients of Gemm/MatMul), at least one CPU candidate, fast
// candidates before reference ones.
#pragma once

#include "runtime/kernel.h"

namespace ravnest::rt::cpu {

void register_conv_kernels(KernelRegistry& registry);         // conv.cc
void register_gemm_kernels(KernelRegistry& registry);         // gemm.cc
void register_eltwise_kernels(KernelRegistry& registry);      // eltwise.cc
void register_pool_kernels(KernelRegistry& registry);         // pool.cc
void register_shape_kernels(KernelRegistry& registry);        // shape_ops.cc
void register_elementwise_kernels(KernelRegistry& registry);  // elementwise.cc
void register_loss_kernels(KernelRegistry& registry);         // loss.cc
void register_optimizer_kernels(KernelRegistry& registry);    // optimizer.cc
void register_math_kernels(KernelRegistry& registry);           // math.cc
void register_movement_kernels(KernelRegistry& registry);       // movement.cc
void register_normalization_kernels(KernelRegistry& registry);  // normalization.cc

inline void register_all_kernels(KernelRegistry& registry) {
  register_conv_kernels(registry);
  register_gemm_kernels(registry);
  register_eltwise_kernels(registry);
  register_pool_kernels(registry);
  register_shape_kernels(registry);
  register_elementwise_kernels(registry);
  register_loss_kernels(registry);
  register_optimizer_kernels(registry);
  register_math_kernels(registry);
  register_movement_kernels(registry);
  register_normalization_kernels(registry);
}

}  // namespace ravnest::rt::cpu
