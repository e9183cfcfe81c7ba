// The simulator's predicted timeline as Chrome trace events; see prediction.h.
#include "codegen/prediction.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include "runtime/trace.h"

namespace ravnest::cg {
namespace {

constexpr const char* kPredictedCategory = "predicted";
constexpr int kComputeTid = static_cast<int>(rt::TraceLane::kCompute);
constexpr int kWireTid = static_cast<int>(rt::TraceLane::kWire);


// Microseconds after the aligned start; monotone in `seconds`, so simulated order survives.
int64_t offset_us(double seconds) { return static_cast<int64_t>(std::llround(seconds * 1e6)); }

Result<const Json::Array*> trace_events(const Json& trace) {
  if (!trace.is_object()) return error(Code::kInvalidArgument, "trace: expected an object, found ", trace.describe());
  return trace.get_array("traceEvents");
}

// Lenient reads for sorting and filtering: a missing or mistyped field reads as the fallback.
std::string string_or(const Json& e, const char* path, const char* fallback) {
  auto v = e.get_string_or(path, fallback);
  return v.ok() ? *v : fallback;
}
int64_t int_or(const Json& e, const char* path, int64_t fallback) {
  auto v = e.get_int_or(path, fallback);
  return v.ok() ? *v : fallback;
}
double double_or(const Json& e, const char* path, double fallback) {
  auto v = e.get_double_or(path, fallback);
  return v.ok() ? *v : fallback;
}

bool is_predicted(const Json& e) { return string_or(e, "cat", "") == kPredictedCategory; }
bool is_metadata(const Json& e) { return e.is_object() && string_or(e, "ph", "") == "M"; }

}  // namespace

Result<TraceMeasurements> measure_trace(const Json& trace) {
  RN_ASSIGN_OR_RETURN(const Json::Array* events, trace_events(trace));
  TraceMeasurements m;
  int64_t first_step = std::numeric_limits<int64_t>::max();
  int64_t first_start = std::numeric_limits<int64_t>::max();
  double wire_s = 0, step_s = 0;
  int64_t wire_n = 0, step_n = 0;
  for (size_t i = 0; i < events->size(); ++i) {
    const Json& e = (*events)[i];
    if (!e.is_object() || string_or(e, "ph", "") != "X" || is_predicted(e)) continue;
    const std::string where = str_cat("traceEvents[", i, "]");
    auto ts = e.get_int("ts");
    auto dur = e.get_int("dur");
    auto tid = e.get_int_or("tid", 0);
    auto step = e.get_int_or("args.step", -1);
    auto name = e.get_string_or("name", "");
    if (!ts.ok()) return ts.status().with_context(where);
    if (!dur.ok()) return dur.status().with_context(where);
    if (!tid.ok() || !step.ok() || !name.ok())
      return error(Code::kInvalidArgument, where, ": tid, args.step and name must be a number, a number and a string");
    if (*tid == kWireTid) {
      wire_s += static_cast<double>(*dur) * 1e-6;
      ++wire_n;
    } else if (*tid == kComputeTid && *step >= 0) {
      if (*step < first_step) {
        first_step = *step;
        first_start = *ts;
      } else if (*step == first_step) {
        first_start = std::min(first_start, *ts);
      }
      if (*name == "STEP") {
        step_s += static_cast<double>(*dur) * 1e-6;
        ++step_n;
      }
    }
  }
  if (first_step != std::numeric_limits<int64_t>::max()) m.first_step_start_us = first_start;
  if (wire_n) m.comm_s = wire_s / static_cast<double>(wire_n);
  if (step_n) m.step_s = step_s / static_cast<double>(step_n);
  return m;
}

Result<Json::Array> predicted_trace_events(const SimResult& sim, const std::vector<std::string>& node_ids,
                                           int64_t first_pid, int64_t start_us) {
  if (node_ids.size() != static_cast<size_t>(sim.num_stages))
    return error(Code::kInvalidArgument, "predicted timeline: ", node_ids.size(), " node ids for ", sim.num_stages,
                 " stages; give one id per stage");
  Json::Array out;
  for (int s = 0; s < sim.num_stages; ++s) {
    const int64_t pid = first_pid + s;
    out.push_back(rt::trace_metadata("process_name", pid, 0, "name", str_cat("predicted ", node_ids[s], " (stage ", s, ")")));
    out.push_back(rt::trace_metadata("process_sort_index", pid, 0, "sort_index", pid));
    out.push_back(rt::trace_metadata("thread_name", pid, kComputeTid, "name", "predicted compute"));
  }
  for (const SimEvent& ev : sim.events) {
    if (ev.stage < 0 || ev.stage >= sim.num_stages)
      return error(Code::kInvalidArgument, "predicted timeline: event of stage ", ev.stage, " in a run of ",
                   sim.num_stages, " stages");
    const int64_t ts = start_us + offset_us(ev.start);
    Json args = Json::object();
    args.set("microbatch", static_cast<int64_t>(ev.instr.microbatch));
    args.set("start_s", ev.start);
    args.set("end_s", ev.end);
    Json e = Json::object();
    e.set("name", rt::instr_str(ev.instr));
    e.set("cat", kPredictedCategory);
    e.set("ph", "X");
    e.set("ts", ts);
    e.set("dur", start_us + offset_us(ev.end) - ts);
    e.set("pid", first_pid + ev.stage);
    e.set("tid", kComputeTid);
    e.set("args", std::move(args));
    out.push_back(std::move(e));
  }
  return out;
}

Json prediction_summary(const SimResult& sim) {
  Json peak = Json::array();
  for (int v : sim.peak_in_flight) peak.push_back(v);
  Json j = Json::object();
  j.set("schedule", sim.kind);
  j.set("makespan_s", sim.makespan);
  j.set("bubble_ratio", sim.bubble_ratio);
  j.set("steady_bubble_ratio", sim.steady_bubble_ratio);
  j.set("peak_in_flight", std::move(peak));
  return j;
}

Result<SimResult> add_prediction(Json& trace, const std::vector<rt::StageSchedule>& schedules,
                                 const std::vector<StageCost>& costs, const std::vector<std::string>& node_ids) {
  RN_ASSIGN_OR_RETURN(const Json::Array* events, trace_events(trace));
  RN_ASSIGN_OR_RETURN(TraceMeasurements measured, measure_trace(trace));
  SimOptions options;
  options.comm = measured.comm_s;
  options.step = measured.step_s;
  RN_ASSIGN_OR_RETURN(SimResult sim, simulate(schedules, costs, options));

  // The predicted processes go after every pid in use.
  int64_t first_pid = 0;
  for (const Json& e : *events)
    if (e.is_object()) first_pid = std::max(first_pid, int_or(e, "pid", 0) + 1);
  RN_ASSIGN_OR_RETURN(Json::Array predicted, predicted_trace_events(sim, node_ids, first_pid, measured.first_step_start_us));

  // Metadata first, then the spans in (ts, pid, tid) order, as merge_traces writes them.
  using SortKey = std::tuple<double, int64_t, int64_t>;
  Json::Array meta;
  std::vector<std::pair<SortKey, Json>> spans;
  auto add = [&](const Json& e) {
    if (is_metadata(e)) {
      meta.push_back(e);
      return;
    }
    SortKey key{double_or(e, "ts", 0), int_or(e, "pid", 0), int_or(e, "tid", 0)};
    spans.emplace_back(key, e);
  };
  for (const Json& e : *events) add(e);
  for (const Json& e : predicted) add(e);
  std::stable_sort(spans.begin(), spans.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [key, e] : spans) meta.push_back(std::move(e));
  trace.set("traceEvents", Json(std::move(meta)));

  Json summary = prediction_summary(sim);
  summary.set("comm_s", options.comm);
  summary.set("step_s", options.step);
  Json cost_json = Json::array();
  for (const StageCost& c : costs) {
    Json one = Json::object();
    one.set("f_s", c.f);
    one.set("b_s", c.b);
    one.set("w_s", c.w);
    cost_json.push_back(std::move(one));
  }
  summary.set("costs", std::move(cost_json));
  const Json* old_other = trace.find("otherData");
  Json other = old_other && old_other->is_object() ? *old_other : Json::object();
  other.set("prediction", std::move(summary));
  trace.set("otherData", std::move(other));
  return sim;
}

Result<SimResult> add_prediction_to_trace_file(const std::string& trace_path,
                                               const std::vector<std::string>& schedule_paths,
                                               const std::vector<StageCost>& costs,
                                               const std::vector<std::string>& node_ids) {
  std::vector<rt::StageSchedule> schedules;
  for (const std::string& path : schedule_paths) {
    RN_ASSIGN_OR_RETURN(Json json, read_json_file(path));
    auto schedule = rt::schedule_from_json(json);
    if (!schedule.ok()) return schedule.status().with_context("schedule '" + path + "'");
    schedules.push_back(std::move(*schedule));
  }
  RN_ASSIGN_OR_RETURN(Json trace, read_json_file(trace_path));
  auto sim = add_prediction(trace, schedules, costs, node_ids);
  if (!sim.ok()) return sim.status().with_context("predicting the timeline of '" + trace_path + "'");
  RN_RETURN_IF_ERROR(rt::write_trace_document(trace, trace_path));
  return sim;
}

}  // namespace ravnest::cg
