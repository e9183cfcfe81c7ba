// Op family: see frontend/op_families.h.
#include "frontend/op_families.h"

namespace ravnest::fe {

std::vector<OpDef> movement_ops() { return {}; }

}  // namespace ravnest::fe
