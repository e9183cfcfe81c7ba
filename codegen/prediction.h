// The simulator's prediction beside a measured timeline: given the stages'
// schedules and measured per-stage F/B/W times, simulate() one step and add the
// predicted timeline to a merged Chrome trace (ravnest-launch --trace --predict).
//
// Guarantees:
//  * predicted_trace_events() returns, per stage, process_name ("predicted
//    <node> (stage s)"), process_sort_index and thread_name metadata, then one
//    complete event ("ph":"X", category "predicted", name "F 3") per simulated
//    F/B/W, starting at start_us + the simulated start. Its pids are
//    first_pid + stage; ts and dur are integral microseconds, and an event that
//    ends before another starts in the simulation does so in the trace too.
//  * measure_trace() reads only what ravnest-rt's traces hold (pid = stage, the
//    compute/comm/wire lanes, args.step and args.microbatch) and never fails on
//    a trace without some kind of span: the missing measure is 0.
//  * add_prediction() leaves every existing event in place, inserts the
//    predicted metadata after the existing metadata and the predicted spans in
//    (ts, pid, tid) order among the others, so a merged trace stays sorted, and
//    sets otherData.prediction {makespan_s, bubble_ratio, steady_bubble_ratio,
//    peak_in_flight, comm_s, step_s, costs}. Errors name the stage or field
//    that is wrong.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codegen/simulator.h"
#include "common/json.h"
#include "common/status.h"
#include "runtime/schedule.h"

namespace ravnest::cg {

// What a merged trace says about the run, beyond the per-instruction means.
struct TraceMeasurements {
  int64_t first_step_start_us = 0;  // earliest compute span (F/B/W/STEP) of the first traced step
  double comm_s = 0;  // mean seconds of the wire spans (the transport writing a frame to its socket)
  double step_s = 0;  // mean seconds of STEP (the optimizer)
};
Result<TraceMeasurements> measure_trace(const Json& trace);

// Metadata and F/B/W spans of `sim` as trace events (see the file comment).
// `node_ids` names the processes, one per stage.
Result<Json::Array> predicted_trace_events(const SimResult& sim, const std::vector<std::string>& node_ids,
                                           int64_t first_pid, int64_t start_us);

// {makespan_s, bubble_ratio, steady_bubble_ratio, peak_in_flight: [per stage]}.
Json prediction_summary(const SimResult& sim);

// Simulates one step of `schedules` with per-stage `costs` and the trace's
// measured communication and optimizer times, and adds the prediction to the
// merged `trace` (a {"traceEvents": [...], "otherData": {...}} document): one
// process per stage after the measured ones, aligned with the first traced step.
// Returns the simulation.
Result<SimResult> add_prediction(Json& trace, const std::vector<rt::StageSchedule>& schedules,
                                 const std::vector<StageCost>& costs, const std::vector<std::string>& node_ids);

// add_prediction() on the trace file `trace_path` (rewritten atomically), with
// each stage's schedule read from `schedule_paths` (bundle schedule.json files,
// in stage order).
Result<SimResult> add_prediction_to_trace_file(const std::string& trace_path,
                                               const std::vector<std::string>& schedule_paths,
                                               const std::vector<StageCost>& costs,
                                               const std::vector<std::string>& node_ids);

}  // namespace ravnest::cg
