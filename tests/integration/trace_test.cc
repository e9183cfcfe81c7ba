// Traces of real multi-process runs: ravnest-launch --trace merges the nodes'
// timelines into one Chrome trace whose spans are complete and causally
// ordered across processes (every process stamps system_clock time), and the
// "done" progress event reports each stage's mean F, B and W times.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <tuple>

#include "common/json.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::run_process;
using testing::source_path;

constexpr int kSteps = 3;
constexpr int kMicrobatches = 4;

std::string compile_cnn(const std::string& name, int stages) {
  std::string dir = testing::temp_dir(name);
  auto r = run_process({binary("ravnestc"), "compile", source_path("models/cnn/cnn.onnx"), "-o", dir, "--stages",
                        std::to_string(stages), "--batch", "32", "--microbatches", std::to_string(kMicrobatches),
                        "--steps", std::to_string(kSteps), "--no-eval"},
                       120);
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
  return dir;
}

struct Span {
  int64_t start = 0, end = 0;
};
// (stage, instruction name without micro-batch, step, micro-batch) -> span
using SpanKey = std::tuple<int, std::string, int64_t, int64_t>;

TEST(TraceRun, LaunchMergesCompleteCausallyOrderedTimelines) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile_cnn("trace2", 2);
  std::string out = dir + "/trace.json";
  auto r = run_process({binary("ravnest-launch"), dir, "--trace", out, "--quiet", "--timeout", "240"}, 300,
                       {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto trace = read_json_file(out);
  ASSERT_TRUE(trace.ok()) << trace.status().to_string();
  auto events = trace->get_array("traceEvents");
  ASSERT_TRUE(events.ok()) << events.status().to_string();

  // Which pid is which stage, from the process_name metadata.
  std::map<int64_t, int> stage_of_pid;
  for (const Json& e : **events)
    if (e.get_string("ph").value() == "M" && e.get_string("name").value() == "process_name") {
      std::string name = e.get_string("args.name").value();
      for (int stage : {0, 1})
        if (name == "node" + std::to_string(stage) + " (stage " + std::to_string(stage) + ")")
          stage_of_pid[e.get_int("pid").value()] = stage;
    }
  ASSERT_EQ(stage_of_pid.size(), 2u) << "expected process_name metadata for node0 (stage 0) and node1 (stage 1)";

  std::map<SpanKey, Span> spans;
  int64_t last_ts = 0;
  for (const Json& e : **events) {
    if (e.get_string("ph").value() != "X") continue;
    auto ts = e.get_int("ts");
    auto dur = e.get_int("dur");
    auto name = e.get_string("name");
    auto step = e.get_int("args.step");
    auto mb = e.get_int("args.microbatch");
    ASSERT_TRUE(ts.ok() && dur.ok() && name.ok() && step.ok() && mb.ok() && e.has("args.bytes")) << e.dump(0);
    EXPECT_GE(*ts, last_ts) << "events are not sorted by time: " << e.dump(0);
    last_ts = *ts;
    EXPECT_GE(*dur, 0);
    ASSERT_TRUE(stage_of_pid.count(e.get_int("pid").value())) << e.dump(0);
    std::string kind = name->substr(0, name->find(' '));
    bool inserted =
        spans.emplace(SpanKey{stage_of_pid[e.get_int("pid").value()], kind, *step, *mb}, Span{*ts, *ts + *dur}).second;
    EXPECT_TRUE(inserted) << "duplicate span " << e.dump(0);
  }

  for (int stage : {0, 1})
    for (const char* kind : {"F", "B", "W"})
      for (int64_t step = 0; step < kSteps; ++step)
        for (int64_t mb = 0; mb < kMicrobatches; ++mb)
          EXPECT_TRUE(spans.count({stage, kind, step, mb}))
              << "no span " << kind << " " << mb << " of step " << step << " on stage " << stage;
  // The wire orders the stages: stage 1 runs F m only after stage 0's F m has
  // produced the activation, and stage 0 runs B m only after stage 1's B m has
  // produced the gradient. Also each stage has its own waits and sends.
  for (int64_t step = 0; step < kSteps; ++step)
    for (int64_t mb = 0; mb < kMicrobatches; ++mb) {
      const Span& f0 = spans[{0, "F", step, mb}];
      const Span& f1 = spans[{1, "F", step, mb}];
      const Span& b0 = spans[{0, "B", step, mb}];
      const Span& b1 = spans[{1, "B", step, mb}];
      EXPECT_GE(f1.start, f0.end) << "step " << step << ": F " << mb << " on stage 1 before stage 0 finished it";
      EXPECT_GE(b0.start, b1.end) << "step " << step << ": B " << mb << " on stage 0 before stage 1 finished it";
      EXPECT_TRUE(spans.count({0, "SEND_ACT", step, mb}) && spans.count({1, "RECV_ACT", step, mb}));
      EXPECT_TRUE(spans.count({1, "SEND_GRAD", step, mb}) && spans.count({0, "RECV_GRAD", step, mb}));
      // The transport's thread reports when it wrote each frame, after it was queued.
      ASSERT_TRUE(spans.count({0, "ACT", step, mb})) << "no wire span ACT " << mb << " of step " << step;
      ASSERT_TRUE(spans.count({1, "GRAD", step, mb})) << "no wire span GRAD " << mb << " of step " << step;
      const Span& act_queued = spans[{0, "SEND_ACT", step, mb}];
      const Span& act_written = spans[{0, "ACT", step, mb}];
      const Span& grad_queued = spans[{1, "SEND_GRAD", step, mb}];
      const Span& grad_written = spans[{1, "GRAD", step, mb}];
      EXPECT_GE(act_written.start, act_queued.start);
      EXPECT_GE(grad_written.start, grad_queued.start);
    }
  for (int stage : {0, 1})
    for (int64_t step = 0; step < kSteps; ++step) EXPECT_TRUE(spans.count({stage, "STEP", step, -1}));
}

// One stage, no peers: the "done" event carries positive mean F, B and W times.
TEST(TraceRun, DoneEventReportsMeanComputeTimes) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile_cnn("trace1", 1);
  std::string trace = dir + "/node0.json";
  auto r = run_process({binary("ravnest-rt"), "--bundle", dir + "/node0", "--no-eval", "--trace", trace}, 120,
                       {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  std::istringstream lines(r.out);
  std::string line;
  bool found = false;
  while (std::getline(lines, line)) {
    auto json = parse_json(line);
    if (!json.ok() || json->get_string_or("event", "").value() != "done") continue;
    found = true;
    for (const char* field : {"f_s", "b_s", "w_s"}) {
      auto v = json->get_double(field);
      ASSERT_TRUE(v.ok()) << line;
      EXPECT_GT(*v, 0.0) << field << " in " << line;
    }
  }
  EXPECT_TRUE(found) << r.out;
  // The node's own trace holds the same means.
  auto doc = read_json_file(trace);
  ASSERT_TRUE(doc.ok()) << doc.status().to_string();
  EXPECT_GT(doc->get_double("otherData.mean_s.F").value(), 0.0);
  EXPECT_EQ(doc->get_string("otherData.node").value(), "node0");
}

// --predict adds the simulator's timeline of one step beside the measured one:
// one "predicted" process per node with an F, B and W span per micro-batch, and
// the simulated bubbles in otherData.prediction.
TEST(TraceRun, PredictAddsTheSimulatedTimeline) {
  if (!testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  std::string dir = compile_cnn("trace_predict", 2);
  std::string out = dir + "/trace.json";
  auto r = run_process({binary("ravnest-launch"), dir, "--trace", out, "--predict", "--quiet", "--timeout", "240"},
                       300, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto trace = read_json_file(out);
  ASSERT_TRUE(trace.ok()) << trace.status().to_string();
  auto events = trace->get_array("traceEvents");
  ASSERT_TRUE(events.ok()) << events.status().to_string();

  std::map<int64_t, int> predicted_stage_of_pid;
  for (const Json& e : **events)
    if (e.get_string("ph").value() == "M" && e.get_string("name").value() == "process_name")
      for (int stage : {0, 1})
        if (e.get_string("args.name").value() ==
            "predicted node" + std::to_string(stage) + " (stage " + std::to_string(stage) + ")")
          predicted_stage_of_pid[e.get_int("pid").value()] = stage;
  ASSERT_EQ(predicted_stage_of_pid.size(), 2u) << "expected processes 'predicted node0 (stage 0)' and "
                                                  "'predicted node1 (stage 1)'";

  // (stage, "F 2") -> count; and the measured first step's start, where the prediction begins.
  std::map<std::pair<int, std::string>, int> predicted;
  int64_t first_measured = INT64_MAX, first_predicted = INT64_MAX;
  for (const Json& e : **events) {
    if (e.get_string("ph").value() != "X") continue;
    int64_t ts = e.get_int("ts").value();
    auto it = predicted_stage_of_pid.find(e.get_int("pid").value());
    if (it == predicted_stage_of_pid.end()) {
      if (e.get_int("tid").value() == 1 && e.get_int("args.step").value() == 0) first_measured = std::min(first_measured, ts);
      continue;
    }
    EXPECT_EQ(e.get_string("cat").value(), "predicted") << e.dump(0);
    EXPECT_GE(e.get_int("dur").value(), 0) << e.dump(0);
    ++predicted[{it->second, e.get_string("name").value()}];
    first_predicted = std::min(first_predicted, ts);
  }
  for (int stage : {0, 1})
    for (const char* kind : {"F", "B", "W"})
      for (int mb = 0; mb < kMicrobatches; ++mb)
        EXPECT_EQ((predicted[{stage, std::string(kind) + " " + std::to_string(mb)}]), 1)
            << "predicted " << kind << " " << mb << " on stage " << stage;
  EXPECT_EQ(predicted.size(), 2u * 3u * kMicrobatches) << "only F, B and W spans are predicted";
  EXPECT_EQ(first_predicted, first_measured) << "the prediction starts where the first measured step starts";

  auto makespan = trace->get_double("otherData.prediction.makespan_s");
  auto bubble = trace->get_double("otherData.prediction.bubble_ratio");
  ASSERT_TRUE(makespan.ok() && bubble.ok()) << trace->get("otherData").value()->dump(0);
  EXPECT_GT(*makespan, 0.0);
  EXPECT_GT(*bubble, 0.0) << "two stages cannot both be busy the whole step";
  EXPECT_LT(*bubble, 1.0);
  EXPECT_TRUE(trace->has("otherData.merged_from[1].mean_s.F")) << "the nodes' own otherData stays";
}

}  // namespace
}  // namespace ravnest
