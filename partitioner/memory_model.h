// Memory model: the bytes a pipeline stage needs on its machine, and the check
// that a partition fits, with a suggestion of what would.
//
// Guarantees:
//  * stage bytes = params + grads (= params) + optimizer state (SGD without
//    momentum 0x, SGD with momentum 1x, AdamW and LAMB 2x params) + the stash of
//    one micro-batch x the micro-batches the schedule keeps in flight on that
//    stage + workspace.
//  * In flight on stage s of p with m micro-batches: GPipe m; 1F1B and ZB-H1
//    min(m, p - s); ZB-H2 min(m, 2(p - s) - 1) (about 2p on the first stage).
//  * check_memory() is OK exactly when every stage fits its machine. Otherwise it
//    is kResourceExhausted naming every machine that is short and by how many
//    bytes, and says what would fit: the largest micro-batch count m' < m with
//    the same split, and the smallest stage count p' > p for which an even split
//    of the model fits the smallest machine (or that none up to 4p does).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace ravnest::part {

enum class OptimizerKind { kSgd, kSgdMomentum, kAdamW, kLamb };
enum class ScheduleKind { kGpipe, k1F1B, kZbH1, kZbH2 };
// "sgd", "sgd-momentum" (also "momentum"), "adamw", "lamb"; "gpipe", "1f1b", "zb-h1", "zb-h2".
Result<OptimizerKind> parse_optimizer_kind(const std::string& name);
Result<ScheduleKind> parse_schedule_kind(const std::string& name);
// Optimizer state per parameter byte: 0, 1 or 2.
int optimizer_state_factor(OptimizerKind kind);
// Micro-batches whose stash stage `stage` (0-based) of `stages` holds at once.
int64_t microbatches_in_flight(ScheduleKind schedule, int stages, int stage, int64_t microbatches);

// What one stage holds, whatever machine runs it.
struct StageFootprint {
  double param_bytes = 0;
  double stash_bytes = 0;      // stash of one micro-batch (activations F keeps for B and W)
  double workspace_bytes = 0;  // kernels' scratch, transfer buffers, gradients of activations
};

struct StageMemory {
  double params = 0, grads = 0, optimizer = 0, activations = 0, workspace = 0;
  int64_t in_flight = 0;
  double total() const { return params + grads + optimizer + activations + workspace; }
};

struct MemoryPlan {
  OptimizerKind optimizer = OptimizerKind::kSgdMomentum;
  ScheduleKind schedule = ScheduleKind::k1F1B;
  int64_t microbatches = 1;
};

StageMemory stage_memory(const StageFootprint& stage, int stages, int index, const MemoryPlan& plan);

// One machine as the check sees it.
struct MachineMemory {
  std::string id;
  double available_bytes = 0;
};

// `stages[s]` runs on `machines[s]`.
Status check_memory(const std::vector<StageFootprint>& stages, const std::vector<MachineMemory>& machines,
                    const MemoryPlan& plan);

}  // namespace ravnest::part
