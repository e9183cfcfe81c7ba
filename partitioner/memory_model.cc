// Per-stage memory and the fit check with suggestions (see memory_model.h).
#include "partitioner/memory_model.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace ravnest::part {
namespace {

// Stage memory with the whole model spread evenly over `p` stages, the worst
// (first) stage.
double even_split_first_stage(const std::vector<StageFootprint>& stages, int p, const MemoryPlan& plan) {
  StageFootprint total;
  double max_workspace = 0;
  for (const StageFootprint& s : stages) {
    total.param_bytes += s.param_bytes;
    total.stash_bytes += s.stash_bytes;
    max_workspace = std::max(max_workspace, s.workspace_bytes);
  }
  StageFootprint share{total.param_bytes / p, total.stash_bytes / p, max_workspace};
  return stage_memory(share, p, 0, plan).total();
}

std::string gib(double bytes) {
  std::ostringstream out;
  out.precision(3);
  out << bytes / (1024.0 * 1024 * 1024) << " GiB";
  return out.str();
}

}  // namespace

Result<OptimizerKind> parse_optimizer_kind(const std::string& name) {
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "sgd-momentum" || name == "momentum") return OptimizerKind::kSgdMomentum;
  if (name == "adamw") return OptimizerKind::kAdamW;
  if (name == "lamb") return OptimizerKind::kLamb;
  return error(Code::kInvalidArgument, "optimizer '", name, "' is not known to the memory model; use sgd, sgd-momentum, adamw or lamb");
}

Result<ScheduleKind> parse_schedule_kind(const std::string& name) {
  if (name == "gpipe") return ScheduleKind::kGpipe;
  if (name == "1f1b") return ScheduleKind::k1F1B;
  if (name == "zb-h1") return ScheduleKind::kZbH1;
  if (name == "zb-h2") return ScheduleKind::kZbH2;
  return error(Code::kInvalidArgument, "schedule '", name, "' is not known to the memory model; use gpipe, 1f1b, zb-h1 or zb-h2");
}

int optimizer_state_factor(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd: return 0;
    case OptimizerKind::kSgdMomentum: return 1;
    case OptimizerKind::kAdamW:
    case OptimizerKind::kLamb: break;
  }
  return 2;
}

int64_t microbatches_in_flight(ScheduleKind schedule, int stages, int stage, int64_t microbatches) {
  const int64_t ahead = static_cast<int64_t>(stages) - stage;  // p - s >= 1
  switch (schedule) {
    case ScheduleKind::kGpipe: return microbatches;
    case ScheduleKind::k1F1B:
    case ScheduleKind::kZbH1: return std::min(microbatches, ahead);
    case ScheduleKind::kZbH2: break;
  }
  return std::min(microbatches, 2 * ahead - 1);
}

StageMemory stage_memory(const StageFootprint& stage, int stages, int index, const MemoryPlan& plan) {
  StageMemory m;
  m.params = stage.param_bytes;
  m.grads = stage.param_bytes;
  m.optimizer = stage.param_bytes * optimizer_state_factor(plan.optimizer);
  m.in_flight = microbatches_in_flight(plan.schedule, stages, index, plan.microbatches);
  m.activations = stage.stash_bytes * static_cast<double>(m.in_flight);
  m.workspace = stage.workspace_bytes;
  return m;
}

Status check_memory(const std::vector<StageFootprint>& stages, const std::vector<MachineMemory>& machines,
                    const MemoryPlan& plan) {
  if (stages.size() != machines.size() || stages.empty())
    return error(Code::kInvalidArgument, "memory check: ", stages.size(), " stage(s) for ", machines.size(),
                 " machine(s); give one machine per stage");
  const int p = static_cast<int>(stages.size());
  auto fits = [&](const MemoryPlan& candidate) {
    for (int s = 0; s < p; ++s)
      if (stage_memory(stages[static_cast<size_t>(s)], p, s, candidate).total() > machines[static_cast<size_t>(s)].available_bytes)
        return false;
    return true;
  };
  if (fits(plan)) return ok_status();

  std::ostringstream msg;
  msg << "the partition does not fit in memory:";
  for (int s = 0; s < p; ++s) {
    StageMemory m = stage_memory(stages[static_cast<size_t>(s)], p, s, plan);
    const MachineMemory& machine = machines[static_cast<size_t>(s)];
    if (m.total() <= machine.available_bytes) continue;
    msg << " machine '" << machine.id << "' (stage " << s << ") needs " << static_cast<int64_t>(std::ceil(m.total()))
        << " bytes (" << gib(m.total()) << ": params " << gib(m.params) << ", grads " << gib(m.grads) << ", optimizer "
        << gib(m.optimizer) << ", activations of " << m.in_flight << " micro-batch(es) " << gib(m.activations)
        << ", workspace " << gib(m.workspace) << ") but has " << static_cast<int64_t>(machine.available_bytes)
        << ", short by " << static_cast<int64_t>(std::ceil(m.total() - machine.available_bytes)) << " bytes;";
  }
  // Fewer micro-batches in flight, same split.
  int64_t fewer = 0;
  for (int64_t m = plan.microbatches - 1; m >= 1; --m) {
    MemoryPlan c = plan;
    c.microbatches = m;
    if (fits(c)) {
      fewer = m;
      break;
    }
  }
  if (fewer > 0)
    msg << " it fits with --microbatches " << fewer << " (fewer micro-batches in flight; keep the batch by making each larger only if memory allows);";
  else
    msg << " no smaller micro-batch count fits this split;";
  // More stages, the model split evenly, on the smallest machine.
  double smallest = machines[0].available_bytes;
  for (const MachineMemory& m : machines) smallest = std::min(smallest, m.available_bytes);
  int more = 0;
  for (int q = p + 1; q <= 4 * p; ++q) {
    if (even_split_first_stage(stages, q, plan) <= smallest) {
      more = q;
      break;
    }
  }
  if (more > 0)
    msg << " an even split over " << more << " stages of machines with " << static_cast<int64_t>(smallest)
        << " bytes each fits";
  else
    msg << " no even split over up to " << 4 * p << " stages fits machines of " << static_cast<int64_t>(smallest)
        << " bytes (the first stage's in-flight activations do not shrink with more stages under "
        << (plan.schedule == ScheduleKind::kGpipe ? "GPipe" : "1F1B-like schedules")
        << "); use fewer micro-batches, a smaller batch or machines with more memory";
  return error(Code::kResourceExhausted, msg.str());
}

}  // namespace ravnest::part
