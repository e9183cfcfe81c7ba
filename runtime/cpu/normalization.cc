// CPU kernels of the normalization op family (frontend/ops/normalization.cc).
#include "runtime/cpu/registration.h"

namespace ravnest::rt::cpu {

void register_normalization_kernels(KernelRegistry& registry) { (void)registry; }

}  // namespace ravnest::rt::cpu
