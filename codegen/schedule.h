// Schedule generators: the per-stage instruction lists of one training step.
//
// Guarantees: every generated schedule passes rt::validate_schedule, its stages
// together cannot deadlock (sends are asynchronous; every receive is matched by a
// send its peer issues without waiting on this stage), and B m never waits for a
// W. Kinds (p stages, m micro-batches, stage s; "in flight" = F m done, W m not):
//  * gpipe: all forwards, then all backwards (B and W of a micro-batch together).
//  * 1f1b:  stage s runs min(p-s-1, m) warm-up forwards, then alternates one
//           forward and one backward (B then W), then drains; at most p-s
//           micro-batches are in flight on stage s.
//  * zb-h1: Qi et al.'s ZB-H1: B first, W deferred into the gaps, at most p in
//           flight on every stage (1F1B's peak, reached on its first stage). With
//           F = B = W = 1 and no communication the step takes 3m + p - 1.
//  * zb-h2: ZB-H2: up to 2p - 1 in flight per stage, so warm-up forwards fill the
//           start and deferred Ws fill the tail: with F = B = W = 1 and m >= 2p
//           every stage is busy from its first F to its last W.
//  * auto:  the paper's automatic scheduler: greedy constructions from measured
//           per-stage costs, communication time and a memory limit, tried with
//           several warm-up and W-placement policies, together with the fixed
//           kinds that fit the memory limit; the shortest simulated step wins.
// zb-h1 and zb-h2 are built by the same greedy at unit costs, so they do not
// depend on the costs given.
#pragma once

#include <string>
#include <vector>

#include "codegen/simulator.h"
#include "runtime/schedule.h"

namespace ravnest::cg {

// What "auto" optimises for; the fixed kinds ignore it.
struct ScheduleCosts {
  std::vector<StageCost> stages;  // one per stage; empty = F = B = W = 1 everywhere
  double comm = 0;                // seconds per transfer
  int memory_limit = 0;           // micro-batches in flight per stage; 0 = 2p - 1 (ZB-H2's)
};

inline constexpr const char* kScheduleKinds = "gpipe, 1f1b, zb-h1, zb-h2 or auto";

// All stages' schedules of `kind`.
Result<std::vector<rt::StageSchedule>> make_schedules(const std::string& kind, int num_stages, int microbatches,
                                                      const ScheduleCosts& costs = {});

// One stage's schedule ("auto" assumes equal unit costs).
Result<rt::StageSchedule> make_schedule(const std::string& kind, int stage, int num_stages, int microbatches);

}  // namespace ravnest::cg
