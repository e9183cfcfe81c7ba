#include "codegen/schedule.h"

namespace ravnest::cg {
namespace {

using rt::Instr;
using rt::InstrOp;

struct Emitter {
  int stage, num_stages;
  std::vector<Instr>* out;
  bool has_prev() const { return stage > 0; }
  bool has_next() const { return stage + 1 < num_stages; }
  void forward(int mb) {
    if (has_prev()) out->push_back({InstrOp::kRecvAct, mb});
    out->push_back({InstrOp::kF, mb});
    if (has_next()) out->push_back({InstrOp::kSendAct, mb});
  }
  // B then its W immediately (no deferral in these schedules).
  void backward(int mb) {
    if (has_next()) out->push_back({InstrOp::kRecvGrad, mb});
    out->push_back({InstrOp::kB, mb});
    if (has_prev()) out->push_back({InstrOp::kSendGrad, mb});
    out->push_back({InstrOp::kW, mb});
  }
};

}  // namespace

Result<rt::StageSchedule> make_schedule(const std::string& kind, int stage, int num_stages, int microbatches) {
  if (num_stages < 1 || stage < 0 || stage >= num_stages || microbatches < 1)
    return error(Code::kInvalidArgument, "schedule: stage ", stage, " of ", num_stages, " with ", microbatches,
                 " micro-batches is out of range");
  rt::StageSchedule s;
  s.kind = kind;
  s.stage = stage;
  s.num_stages = num_stages;
  s.microbatches = microbatches;
  Emitter e{stage, num_stages, &s.instrs};
  if (kind == "gpipe") {
    for (int mb = 0; mb < microbatches; ++mb) e.forward(mb);
    for (int mb = 0; mb < microbatches; ++mb) e.backward(mb);
  } else if (kind == "1f1b") {
    int warmup = std::min(num_stages - stage - 1, microbatches);
    int next_f = 0, next_b = 0;
    for (; next_f < warmup; ++next_f) e.forward(next_f);
    while (next_f < microbatches) {
      e.forward(next_f++);
      e.backward(next_b++);
    }
    while (next_b < microbatches) e.backward(next_b++);
  } else {
    return error(Code::kInvalidArgument, "unknown schedule '", kind, "'; choose gpipe or 1f1b");
  }
  s.instrs.push_back({InstrOp::kStep, -1});
  RN_RETURN_IF_ERROR(rt::validate_schedule(s));
  return s;
}

}  // namespace ravnest::cg
