// The simulator's predicted timeline in a merged Chrome trace: one predicted
// process per stage whose F/B/W spans are the simulation's, shifted to the first
// traced step; the measured events stay as they were and the trace stays sorted;
// otherData.prediction holds the simulated bubbles; communication and optimizer
// times come from the trace's wire and STEP spans.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "codegen/prediction.h"
#include "codegen/schedule.h"
#include "runtime/trace.h"

namespace ravnest::cg {
namespace {

namespace fs = std::filesystem;

Json span(const std::string& name, int64_t pid, int tid, int64_t ts, int64_t dur, int64_t step, int64_t mb) {
  Json args = Json::object();
  args.set("step", step);
  args.set("microbatch", mb);
  args.set("bytes", 0);
  Json e = Json::object();
  e.set("name", name);
  e.set("cat", tid == 1 ? "compute" : "send");
  e.set("ph", "X");
  e.set("ts", ts);
  e.set("dur", dur);
  e.set("pid", pid);
  e.set("tid", tid);
  e.set("args", std::move(args));
  return e;
}

Json process_name(int64_t pid, const std::string& name) {
  Json args = Json::object();
  args.set("name", name);
  Json e = Json::object();
  e.set("name", "process_name");
  e.set("ph", "M");
  e.set("pid", pid);
  e.set("tid", 0);
  e.set("args", std::move(args));
  return e;
}

// A small two-stage "measured" trace: step 3 is the first traced step (starting
// at 1'000'000 us), wire spans of 10 and 30 us, STEP spans of 100 and 300 us.
Json measured_trace() {
  Json::Array events{process_name(0, "node0 (stage 0)"), process_name(1, "node1 (stage 1)")};
  events.push_back(span("F 0", 0, 1, 1'000'000, 50, 3, 0));
  events.push_back(span("ACT 0", 0, 3, 1'000'050, 10, 3, 0));
  events.push_back(span("F 0", 1, 1, 1'000'070, 50, 3, 0));
  events.push_back(span("GRAD 0", 1, 3, 1'000'200, 30, 3, 0));
  events.push_back(span("STEP", 0, 1, 1'000'400, 100, 3, -1));
  events.push_back(span("STEP", 1, 1, 1'000'420, 300, 3, -1));
  events.push_back(span("F 0", 0, 1, 2'000'000, 50, 4, 0));
  Json other = Json::object();
  other.set("merged_from", Json::array());
  Json doc = Json::object();
  doc.set("traceEvents", Json(std::move(events)));
  doc.set("displayTimeUnit", "ms");
  doc.set("other", 1);
  doc.set("otherData", std::move(other));
  return doc;
}

std::vector<rt::StageSchedule> schedules(const std::string& kind, int p, int m) {
  auto s = make_schedules(kind, p, m);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? *s : std::vector<rt::StageSchedule>{};
}

const std::vector<StageCost> kCosts{{0.002, 0.003, 0.001}, {0.004, 0.005, 0.002}};

TEST(Prediction, MeasureTraceReadsFirstStepCommAndOptimizer) {
  auto m = measure_trace(measured_trace());
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->first_step_start_us, 1'000'000);
  EXPECT_DOUBLE_EQ(m->comm_s, 20e-6);
  EXPECT_DOUBLE_EQ(m->step_s, 200e-6);

  Json empty = Json::object();
  empty.set("traceEvents", Json::array());
  auto none = measure_trace(empty);
  ASSERT_TRUE(none.ok()) << none.status().to_string();
  EXPECT_EQ(none->first_step_start_us, 0);
  EXPECT_EQ(none->comm_s, 0.0);
  EXPECT_FALSE(measure_trace(Json::object()).ok()) << "a document without traceEvents must be rejected";
}

TEST(Prediction, EventsAreTheSimulationShiftedToTheStart) {
  auto sim = simulate(schedules("1f1b", 2, 4), kCosts, {});
  ASSERT_TRUE(sim.ok()) << sim.status().to_string();
  const int64_t start = 5'000'000;
  auto events = predicted_trace_events(*sim, {"a", "b"}, 7, start);
  ASSERT_TRUE(events.ok()) << events.status().to_string();

  std::map<int64_t, std::string> names;
  size_t spans = 0;
  for (const Json& e : *events) {
    if (e.get_string("ph").value() == "M") {
      if (e.get_string("name").value() == "process_name") names[e.get_int("pid").value()] = e.get_string("args.name").value();
      continue;
    }
    ++spans;
  }
  EXPECT_EQ(names, (std::map<int64_t, std::string>{{7, "predicted a (stage 0)"}, {8, "predicted b (stage 1)"}}));
  ASSERT_EQ(spans, sim->events.size());
  EXPECT_EQ(spans, 2u * 3u * 4u);
  // The spans follow the simulated events one to one.
  size_t i = events->size() - spans;
  for (const SimEvent& ev : sim->events) {
    const Json& e = (*events)[i++];
    EXPECT_EQ(e.get_string("name").value(), rt::instr_str(ev.instr));
    EXPECT_EQ(e.get_string("cat").value(), "predicted");
    EXPECT_EQ(e.get_int("pid").value(), 7 + ev.stage);
    EXPECT_EQ(e.get_int("ts").value(), start + std::llround(ev.start * 1e6));
    EXPECT_EQ(e.get_int("ts").value() + e.get_int("dur").value(), start + std::llround(ev.end * 1e6));
    EXPECT_EQ(e.get_int("args.microbatch").value(), ev.instr.microbatch);
  }
  // Stage 1's F 0 waits for stage 0's F 0 (2 ms) and takes 4 ms.
  auto found = std::find_if(events->begin(), events->end(), [](const Json& e) {
    return e.get_int_or("pid", 0).value() == 8 && e.get_string_or("name", "").value() == "F 0";
  });
  ASSERT_NE(found, events->end());
  EXPECT_EQ(found->get_int("ts").value(), start + 2000);
  EXPECT_EQ(found->get_int("dur").value(), 4000);

  EXPECT_FALSE(predicted_trace_events(*sim, {"a"}, 7, start).ok()) << "one node id for two stages must be rejected";
}

TEST(Prediction, AddPredictionKeepsTheTraceAndAddsSortedProcesses) {
  Json trace = measured_trace();
  const Json before = trace;
  auto sched = schedules("zb-h1", 2, 4);
  auto sim = add_prediction(trace, sched, kCosts, {"node0", "node1"});
  ASSERT_TRUE(sim.ok()) << sim.status().to_string();

  SimOptions options;
  options.comm = 20e-6;
  options.step = 200e-6;
  auto expected = simulate(sched, kCosts, options);
  ASSERT_TRUE(expected.ok());
  EXPECT_DOUBLE_EQ(sim->makespan, expected->makespan);

  const Json::Array& events = *trace.get_array("traceEvents").value();
  const Json::Array& old_events = *before.get_array("traceEvents").value();
  // Every measured event is still there, unchanged.
  for (const Json& e : old_events) EXPECT_NE(std::find(events.begin(), events.end(), e), events.end()) << e.dump(0);
  EXPECT_EQ(events.size(), old_events.size() + 3u * 2u + sim->events.size());
  // Metadata first, then spans sorted by (ts, pid, tid); predicted pids after the measured ones.
  bool in_spans = false;
  std::tuple<int64_t, int64_t, int64_t> last{0, 0, 0};
  std::map<int64_t, std::string> predicted_names;
  int64_t predicted_spans = 0;
  for (const Json& e : events) {
    if (e.get_string("ph").value() == "M") {
      EXPECT_FALSE(in_spans) << "metadata after a span: " << e.dump(0);
      if (e.get_string("name").value() == "process_name" && e.get_int("pid").value() >= 2)
        predicted_names[e.get_int("pid").value()] = e.get_string("args.name").value();
      continue;
    }
    in_spans = true;
    std::tuple<int64_t, int64_t, int64_t> key{e.get_int("ts").value(), e.get_int("pid").value(),
                                              e.get_int("tid").value()};
    EXPECT_LE(last, key) << "not sorted at " << e.dump(0);
    last = key;
    if (e.get_string("cat").value() == "predicted") {
      ++predicted_spans;
      EXPECT_GE(e.get_int("ts").value(), 1'000'000);
    }
  }
  EXPECT_EQ(predicted_names,
            (std::map<int64_t, std::string>{{2, "predicted node0 (stage 0)"}, {3, "predicted node1 (stage 1)"}}));
  EXPECT_EQ(predicted_spans, 2 * 3 * 4);

  EXPECT_TRUE(trace.has("otherData.merged_from")) << "the merged otherData must stay";
  EXPECT_EQ(trace.get_int("other").value(), 1) << "other top-level keys must stay";
  EXPECT_DOUBLE_EQ(trace.get_double("otherData.prediction.makespan_s").value(), expected->makespan);
  EXPECT_DOUBLE_EQ(trace.get_double("otherData.prediction.bubble_ratio").value(), expected->bubble_ratio);
  EXPECT_DOUBLE_EQ(trace.get_double("otherData.prediction.steady_bubble_ratio").value(),
                   expected->steady_bubble_ratio);
  EXPECT_EQ(trace.get_int("otherData.prediction.peak_in_flight[0]").value(), expected->peak_in_flight[0]);
  EXPECT_DOUBLE_EQ(trace.get_double("otherData.prediction.comm_s").value(), 20e-6);
  EXPECT_DOUBLE_EQ(trace.get_double("otherData.prediction.costs[1].b_s").value(), 0.005);

  // A second prediction ignores the first one's spans when measuring.
  auto again = measure_trace(trace);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->first_step_start_us, 1'000'000);
}

TEST(Prediction, RejectsMismatchedInputsAndLeavesTheTrace) {
  Json trace = measured_trace();
  const Json before = trace;
  auto sched = schedules("1f1b", 2, 4);
  EXPECT_FALSE(add_prediction(trace, sched, {kCosts[0]}, {"node0", "node1"}).ok()) << "one cost for two stages";
  EXPECT_FALSE(add_prediction(trace, sched, kCosts, {"node0"}).ok()) << "one node id for two stages";
  sched[1].instrs.pop_back();  // no STEP
  EXPECT_FALSE(add_prediction(trace, sched, kCosts, {"node0", "node1"}).ok()) << "an invalid schedule";
  EXPECT_EQ(trace, before);
}

TEST(Prediction, TraceFileRoundTrip) {
  fs::path dir = fs::temp_directory_path() / ("ravnest_prediction_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string trace_path = (dir / "trace.json").string();
  ASSERT_TRUE(rt::write_trace_document(measured_trace(), trace_path).ok());
  std::vector<std::string> paths;
  for (const rt::StageSchedule& s : schedules("gpipe", 2, 3)) {
    paths.push_back((dir / ("schedule" + std::to_string(s.stage) + ".json")).string());
    FILE* f = std::fopen(paths.back().c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::string text = rt::schedule_to_json(s).dump();
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  auto sim = add_prediction_to_trace_file(trace_path, paths, kCosts, {"node0", "node1"});
  ASSERT_TRUE(sim.ok()) << sim.status().to_string();
  EXPECT_EQ(sim->kind, "gpipe");
  auto doc = read_json_file(trace_path);
  ASSERT_TRUE(doc.ok()) << doc.status().to_string();
  EXPECT_EQ(doc->get_string("otherData.prediction.schedule").value(), "gpipe");
  EXPECT_EQ(doc->get_array("traceEvents").value()->size(), 2u + 7u + 3u * 2u + 2u * 3u * 3u);

  auto missing = add_prediction_to_trace_file(trace_path, {paths[0], (dir / "none.json").string()}, kCosts,
                                              {"node0", "node1"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("none.json"), std::string::npos) << missing.status().message();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ravnest::cg
