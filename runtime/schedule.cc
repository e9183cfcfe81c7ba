#include "runtime/schedule.h"

#include <map>

namespace ravnest::rt {
namespace {

const std::pair<InstrOp, const char*> kNames[] = {
    {InstrOp::kF, "F"},
    {InstrOp::kB, "B"},
    {InstrOp::kW, "W"},
    {InstrOp::kSendAct, "SEND_ACT"},
    {InstrOp::kRecvAct, "RECV_ACT"},
    {InstrOp::kSendGrad, "SEND_GRAD"},
    {InstrOp::kRecvGrad, "RECV_GRAD"},
    {InstrOp::kAllReduce, "ALLREDUCE"},
    {InstrOp::kStep, "STEP"},
};

}  // namespace

const char* instr_op_name(InstrOp op) {
  for (const auto& [o, name] : kNames)
    if (o == op) return name;
  return "?";
}

std::string instr_str(const Instr& instr) {
  std::string s = instr_op_name(instr.op);
  if (instr.microbatch >= 0) s += " " + std::to_string(instr.microbatch);
  return s;
}

Status validate_schedule(const StageSchedule& s) {
  const int m = s.microbatches;
  if (m < 1) return error(Code::kInvalidArgument, "schedule: microbatches must be >= 1, got ", m);
  bool has_prev = s.stage > 0;
  bool has_next = s.stage + 1 < s.num_stages;
  // position of each (op, microbatch) in the list; -1 = absent
  std::map<std::pair<InstrOp, int>, int> at;
  for (size_t i = 0; i < s.instrs.size(); ++i) {
    const Instr& in = s.instrs[i];
    bool per_mb = in.op != InstrOp::kStep && in.op != InstrOp::kAllReduce;
    if (per_mb && (in.microbatch < 0 || in.microbatch >= m))
      return error(Code::kInvalidArgument, "schedule of stage ", s.stage, ": instruction ", i, " '", instr_str(in),
                   "' names a micro-batch outside 0..", m - 1);
    if (!per_mb && i + 1 != s.instrs.size() && in.op == InstrOp::kStep)
      return error(Code::kInvalidArgument, "schedule of stage ", s.stage, ": STEP at instruction ", i,
                   " is not the last instruction");
    if (at.count({in.op, in.microbatch}))
      return error(Code::kInvalidArgument, "schedule of stage ", s.stage, ": instruction ", i, " '", instr_str(in),
                   "' appears twice");
    at[{in.op, in.microbatch}] = static_cast<int>(i);
  }
  auto pos = [&](InstrOp op, int mb) {
    auto it = at.find({op, mb});
    return it == at.end() ? -1 : it->second;
  };
  for (int mb = 0; mb < m; ++mb) {
    auto need_before = [&](InstrOp first, InstrOp second) -> Status {
      int a = pos(first, mb), b = pos(second, mb);
      if (a < 0) return error(Code::kInvalidArgument, "schedule of stage ", s.stage, ": '", instr_str({first, mb}), "' is missing");
      if (b < 0) return error(Code::kInvalidArgument, "schedule of stage ", s.stage, ": '", instr_str({second, mb}), "' is missing");
      if (a > b)
        return error(Code::kInvalidArgument, "schedule of stage ", s.stage, ": '", instr_str({second, mb}),
                     "' (instruction ", b, ") comes before '", instr_str({first, mb}), "' (instruction ", a, ")");
      return ok_status();
    };
    RN_RETURN_IF_ERROR(need_before(InstrOp::kF, InstrOp::kB));
    RN_RETURN_IF_ERROR(need_before(InstrOp::kB, InstrOp::kW));
    if (has_prev) {
      RN_RETURN_IF_ERROR(need_before(InstrOp::kRecvAct, InstrOp::kF));
      RN_RETURN_IF_ERROR(need_before(InstrOp::kB, InstrOp::kSendGrad));
    }
    if (has_next) {
      RN_RETURN_IF_ERROR(need_before(InstrOp::kF, InstrOp::kSendAct));
      RN_RETURN_IF_ERROR(need_before(InstrOp::kRecvGrad, InstrOp::kB));
    }
    if (!has_prev && (pos(InstrOp::kRecvAct, mb) >= 0 || pos(InstrOp::kSendGrad, mb) >= 0))
      return error(Code::kInvalidArgument, "schedule of stage ", s.stage, ": the first stage cannot RECV_ACT or SEND_GRAD");
    if (!has_next && (pos(InstrOp::kSendAct, mb) >= 0 || pos(InstrOp::kRecvGrad, mb) >= 0))
      return error(Code::kInvalidArgument, "schedule of stage ", s.stage, ": the last stage cannot SEND_ACT or RECV_GRAD");
  }
  if (s.instrs.empty() || s.instrs.back().op != InstrOp::kStep)
    return error(Code::kInvalidArgument, "schedule of stage ", s.stage, ": the last instruction must be STEP");
  return ok_status();
}

Json schedule_to_json(const StageSchedule& s) {
  Json j = Json::object();
  j.set("kind", s.kind);
  j.set("stage", s.stage);
  j.set("num_stages", s.num_stages);
  j.set("microbatches", s.microbatches);
  Json list = Json::array();
  for (const Instr& in : s.instrs) list.push_back(instr_str(in));
  j.set("instructions", std::move(list));
  return j;
}

Result<StageSchedule> schedule_from_json(const Json& j) {
  StageSchedule s;
  RN_ASSIGN_OR_RETURN(s.kind, j.get_string("kind"));
  RN_ASSIGN_OR_RETURN(int64_t stage, j.get_int("stage"));
  RN_ASSIGN_OR_RETURN(int64_t stages, j.get_int("num_stages"));
  RN_ASSIGN_OR_RETURN(int64_t mbs, j.get_int("microbatches"));
  if (stages < 1 || stages > 4096 || stage < 0 || stage >= stages || mbs < 1 || mbs > 65536)
    return error(Code::kInvalidArgument, "schedule: stage ", stage, " of ", stages, " with ", mbs,
                 " micro-batches is out of range");
  s.stage = static_cast<int>(stage);
  s.num_stages = static_cast<int>(stages);
  s.microbatches = static_cast<int>(mbs);
  RN_ASSIGN_OR_RETURN(const Json::Array* list, j.get_array("instructions"));
  for (const Json& item : *list) {
    if (!item.is_string()) return error(Code::kInvalidArgument, "schedule: instruction ", item.describe(), " is not a string");
    const std::string& text = item.as_string();
    std::string op_text = text.substr(0, text.find(' '));
    Instr in;
    bool found = false;
    for (const auto& [op, name] : kNames)
      if (op_text == name) {
        in.op = op;
        found = true;
      }
    if (!found) return error(Code::kInvalidArgument, "schedule: unknown instruction '", text, "'");
    if (text.size() > op_text.size()) {
      std::string num = text.substr(op_text.size() + 1);
      if (num.empty() || num.size() > 6 || num.find_first_not_of("0123456789") != std::string::npos)
        return error(Code::kInvalidArgument, "schedule: bad micro-batch in '", text, "'");
      in.microbatch = std::stoi(num);
    }
    s.instrs.push_back(in);
  }
  RN_RETURN_IF_ERROR(validate_schedule(s));
  return s;
}

}  // namespace ravnest::rt
