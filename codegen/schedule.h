// Schedule generators: the per-stage instruction lists of one training step.
//
// Guarantees: every generated schedule passes rt::validate_schedule, and the
// stages' lists together cannot deadlock (sends are asynchronous; every
// receive is matched by a send its peer issues without waiting on this stage).
//  * gpipe: all forwards, then all backwards (B and W of a micro-batch together).
//  * 1f1b:  stage s runs min(p-s-1, m) warm-up forwards, then alternates one
//           forward and one backward, then drains the remaining backwards;
//           at most p-s micro-batches are in flight on stage s.
#pragma once

#include <string>
#include <vector>

#include "runtime/schedule.h"

namespace ravnest::cg {

Result<rt::StageSchedule> make_schedule(const std::string& kind, int stage, int num_stages, int microbatches);

}  // namespace ravnest::cg
