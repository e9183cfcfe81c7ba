// CPU kernels of the movement op family (frontend/ops/movement.cc).
#include "runtime/cpu/registration.h"

namespace ravnest::rt::cpu {

void register_movement_kernels(KernelRegistry& registry) { (void)registry; }

}  // namespace ravnest::rt::cpu
