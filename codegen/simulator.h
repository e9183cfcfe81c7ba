// Pipeline schedule simulator: runs the per-stage instruction lists of one
// training step against per-stage F/B/W costs and reports when each computation
// runs.
//
// Guarantees: simulate() accepts only schedules that pass rt::validate_schedule,
// agree on the number of stages and micro-batches, respect every cross-stage
// dependency (RECV_ACT m on stage s waits for SEND_ACT m of stage s-1, RECV_GRAD m
// for SEND_GRAD m of stage s+1) and stay within the memory limit. Otherwise it
// returns an error naming the stage and the instruction: a deadlock lists every
// blocked stage with the send it waits for and why that send never comes.
//
// Timing model: F, B and W take the stage's cost; a send costs its stage nothing
// (the transport queues it) and arrives `comm` seconds later; a receive blocks
// until its message has arrived; STEP takes `step` seconds. Results do not depend
// on the order in which the simulator visits stages.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/schedule.h"

namespace ravnest::cg {

// Seconds one micro-batch's forward (f), input-gradient (b) and weight-gradient
// (w) program takes on a stage.
struct StageCost {
  double f = 1, b = 1, w = 1;
};

struct SimOptions {
  double comm = 0;       // seconds from a send to its arrival at the peer
  int memory_limit = 0;  // micro-batches alive per stage (from F m to the end of W m); 0 = unlimited
  double step = 0;       // seconds of STEP (the optimizer)
};

struct SimEvent {
  int stage = 0;
  rt::Instr instr;  // F, B or W
  double start = 0, end = 0;
};

struct SimResult {
  std::string kind;
  int num_stages = 0, microbatches = 0;
  double makespan = 0;  // end of the last computation of any stage; every stage starts at 0
  // sum over stages of (makespan - busy_s) / (p * makespan).
  double bubble_ratio = 0;
  // The paper's measure, for an optimizer step that does not synchronise the stages:
  // span = max over stages of (last end - first start); sum over stages of
  // (span - busy_s) / (p * span).
  double steady_bubble_ratio = 0;
  std::vector<double> busy;           // per stage: seconds of F, B and W
  std::vector<int> peak_in_flight;    // per stage: most micro-batches alive at once
  std::vector<SimEvent> events;       // F/B/W in order of (stage, start)
};

// `costs` has one entry per stage.
Result<SimResult> simulate(const std::vector<rt::StageSchedule>& schedules, const std::vector<StageCost>& costs,
                           const SimOptions& options);

// One row per stage, one column per `unit` seconds (0: the smallest F/B/W cost,
// widened so the grid has at most 400 columns): 'F', 'B', 'W' for the computation
// covering the column's middle, '.' for idle.
std::string render_text(const SimResult& result, double unit = 0);

// An SVG timeline like the paper's figures: one row per stage, F/B/W boxes
// coloured and labelled with the micro-batch, idle time left grey, a legend, and
// the makespan and bubble ratio in the title.
std::string render_svg(const SimResult& result);

}  // namespace ravnest::cg
