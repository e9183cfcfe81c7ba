// A stage's static schedule: the ordered instruction list one training step
// executes. Written by the compiler (codegen/schedule*), executed by the trainer.
//
// Invariant (checked by validate_schedule): every micro-batch 0..m-1 has exactly
// one F, B and W; F m precedes B m precedes W m; RECV_ACT m precedes F m and
// SEND_ACT m follows it (when the stage has a previous/next stage), likewise
// RECV_GRAD m before B m and SEND_GRAD m after it; STEP comes last.
#pragma once

#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace ravnest::rt {

enum class InstrOp { kF, kB, kW, kSendAct, kRecvAct, kSendGrad, kRecvGrad, kAllReduce, kStep };

struct Instr {
  InstrOp op = InstrOp::kF;
  int microbatch = -1;  // -1 for STEP / ALLREDUCE
  bool operator==(const Instr&) const = default;
};

const char* instr_op_name(InstrOp op);
std::string instr_str(const Instr& instr);  // "F 3", "STEP"

struct StageSchedule {
  std::string kind;  // "1f1b", "gpipe", ...
  int stage = 0;
  int num_stages = 1;
  int microbatches = 1;
  std::vector<Instr> instrs;
};

Status validate_schedule(const StageSchedule& schedule);
Json schedule_to_json(const StageSchedule& schedule);
Result<StageSchedule> schedule_from_json(const Json& json);

}  // namespace ravnest::rt
