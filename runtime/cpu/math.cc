// CPU kernels of the math op family (frontend/ops/math.cc).
#include "runtime/cpu/registration.h"

namespace ravnest::rt::cpu {

void register_math_kernels(KernelRegistry& registry) { (void)registry; }

}  // namespace ravnest::rt::cpu
