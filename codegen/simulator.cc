// Simulates one training step of a pipeline schedule; see simulator.h for the
// timing model and what is checked.
#include "codegen/simulator.h"

#include <algorithm>
#include <limits>
#include <sstream>

namespace ravnest::cg {
namespace {

using rt::Instr;
using rt::InstrOp;

constexpr double kUnknown = std::numeric_limits<double>::infinity();

// The message a receive waits for: who sends it and with which instruction.
struct Wait {
  int peer;
  Instr send;
};

Wait wait_of(int stage, const Instr& recv) {
  if (recv.op == InstrOp::kRecvAct) return {stage - 1, {InstrOp::kSendAct, recv.microbatch}};
  return {stage + 1, {InstrOp::kSendGrad, recv.microbatch}};
}

int find_instr(const rt::StageSchedule& s, const Instr& instr) {
  auto it = std::find(s.instrs.begin(), s.instrs.end(), instr);
  return it == s.instrs.end() ? -1 : static_cast<int>(it - s.instrs.begin());
}

Status check_inputs(const std::vector<rt::StageSchedule>& schedules, const std::vector<StageCost>& costs,
                    const SimOptions& options) {
  const int p = static_cast<int>(schedules.size());
  if (p < 1) return error(Code::kInvalidArgument, "simulate: no stage schedules given");
  if (costs.size() != schedules.size())
    return error(Code::kInvalidArgument, "simulate: ", costs.size(), " stage costs for ", p,
                 " stages; give one {f,b,w} per stage");
  if (!(options.comm >= 0) || !(options.step >= 0) || options.memory_limit < 0)
    return error(Code::kInvalidArgument, "simulate: comm, step and memory limit must be non-negative");
  for (int s = 0; s < p; ++s) {
    const rt::StageSchedule& sch = schedules[static_cast<size_t>(s)];
    if (sch.stage != s || sch.num_stages != p || sch.microbatches != schedules[0].microbatches)
      return error(Code::kInvalidArgument, "simulate: schedule ", s, " says stage ", sch.stage, " of ", sch.num_stages,
                   " with ", sch.microbatches, " micro-batches; expected stage ", s, " of ", p, " with ",
                   schedules[0].microbatches);
    const StageCost& c = costs[static_cast<size_t>(s)];
    if (!(c.f >= 0) || !(c.b >= 0) || !(c.w >= 0))
      return error(Code::kInvalidArgument, "simulate: stage ", s, " has a negative or NaN cost");
    RN_RETURN_IF_ERROR(rt::validate_schedule(sch));
  }
  return ok_status();
}

// Explains a deadlock: every unfinished stage, the receive it blocks at, and why
// the send it waits for never comes.
Status deadlock_error(const std::vector<rt::StageSchedule>& schedules, const std::vector<size_t>& pc) {
  std::ostringstream out;
  out << "schedule deadlocks:";
  for (size_t s = 0; s < schedules.size(); ++s) {
    if (pc[s] >= schedules[s].instrs.size()) continue;
    const Instr& at = schedules[s].instrs[pc[s]];
    Wait w = wait_of(static_cast<int>(s), at);
    const rt::StageSchedule& peer = schedules[static_cast<size_t>(w.peer)];
    int where = find_instr(peer, w.send);
    out << " stage " << s << " blocks at instruction " << pc[s] << " '" << rt::instr_str(at) << "' waiting for '"
        << rt::instr_str(w.send) << "' of stage " << w.peer;
    if (where < 0) {
      out << ", which stage " << w.peer << " never issues;";
    } else {
      size_t peer_pc = pc[static_cast<size_t>(w.peer)];
      out << ", which stage " << w.peer << " issues only at its instruction " << where << ", after its blocked '"
          << rt::instr_str(peer.instrs[peer_pc]) << "' (instruction " << peer_pc << ");";
    }
  }
  out << " reorder the sends so that no stage waits for a message its peer sends only after hearing back";
  return Status(Code::kInvalidArgument, out.str());
}

}  // namespace

Result<SimResult> simulate(const std::vector<rt::StageSchedule>& schedules, const std::vector<StageCost>& costs,
                           const SimOptions& options) {
  RN_RETURN_IF_ERROR(check_inputs(schedules, costs, options));
  const size_t p = schedules.size();
  const int m = schedules[0].microbatches;
  SimResult r;
  r.kind = schedules[0].kind;
  r.num_stages = static_cast<int>(p);
  r.microbatches = m;
  r.busy.assign(p, 0);
  r.peak_in_flight.assign(p, 0);
  // Arrival time at stage s of micro-batch mb's activation / gradient; kUnknown until sent.
  std::vector<std::vector<double>> act_at(p, std::vector<double>(static_cast<size_t>(m), kUnknown));
  std::vector<std::vector<double>> grad_at = act_at;
  std::vector<size_t> pc(p, 0);
  std::vector<double> now(p, 0), first_start(p, kUnknown), last_end(p, 0);
  std::vector<int> in_flight(p, 0);

  // Runs every stage as far as it can go until none can move; each stage's
  // timing depends only on its own list and the arrival times, so the visiting
  // order does not matter.
  for (bool moved = true; moved;) {
    moved = false;
    for (size_t s = 0; s < p; ++s) {
      const rt::StageSchedule& sch = schedules[s];
      const StageCost& c = costs[s];
      for (; pc[s] < sch.instrs.size(); ++pc[s], moved = true) {
        const Instr& in = sch.instrs[pc[s]];
        const size_t mb = static_cast<size_t>(std::max(in.microbatch, 0));
        double cost = -1;
        switch (in.op) {
          case InstrOp::kF:
            cost = c.f;
            if (options.memory_limit > 0 && in_flight[s] + 1 > options.memory_limit)
              return error(Code::kResourceExhausted, "schedule of stage ", s, ": instruction ", pc[s], " '",
                           rt::instr_str(in), "' would keep ", in_flight[s] + 1,
                           " micro-batches alive, over the memory limit of ", options.memory_limit,
                           "; run a W first or raise the limit");
            r.peak_in_flight[s] = std::max(r.peak_in_flight[s], ++in_flight[s]);
            break;
          case InstrOp::kB: cost = c.b; break;
          case InstrOp::kW:
            cost = c.w;
            --in_flight[s];
            break;
          case InstrOp::kSendAct: act_at[s + 1][mb] = now[s] + options.comm; break;
          case InstrOp::kSendGrad: grad_at[s - 1][mb] = now[s] + options.comm; break;
          case InstrOp::kRecvAct:
          case InstrOp::kRecvGrad: {
            double at = (in.op == InstrOp::kRecvAct ? act_at : grad_at)[s][mb];
            if (at == kUnknown) goto blocked;
            now[s] = std::max(now[s], at);
            break;
          }
          case InstrOp::kStep: now[s] += options.step; break;
          case InstrOp::kAllReduce: break;
        }
        if (cost >= 0) {
          r.events.push_back({static_cast<int>(s), in, now[s], now[s] + cost});
          first_start[s] = std::min(first_start[s], now[s]);
          now[s] += cost;
          last_end[s] = now[s];
          r.busy[s] += cost;
        }
      }
    blocked:;
    }
  }
  for (size_t s = 0; s < p; ++s)
    if (pc[s] < schedules[s].instrs.size()) return deadlock_error(schedules, pc);

  double span = 0, busy = 0;
  for (size_t s = 0; s < p; ++s) {
    r.makespan = std::max(r.makespan, last_end[s]);
    span = std::max(span, last_end[s] - first_start[s]);
    busy += r.busy[s];
  }
  const double pd = static_cast<double>(p);
  r.bubble_ratio = r.makespan > 0 ? (pd * r.makespan - busy) / (pd * r.makespan) : 0;
  r.steady_bubble_ratio = span > 0 ? (pd * span - busy) / (pd * span) : 0;
  std::stable_sort(r.events.begin(), r.events.end(), [](const SimEvent& a, const SimEvent& b) {
    return a.stage != b.stage ? a.stage < b.stage : a.start < b.start;
  });
  return r;
}

}  // namespace ravnest::cg
