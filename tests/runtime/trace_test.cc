// TraceRecorder and merge_traces: the files are valid JSON in the Chrome
// trace-event format, spans carry their fields, a disabled recorder records
// nothing, and merging keeps every event with distinct pids in sorted order.
#include "runtime/trace.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "common/json.h"

namespace ravnest::rt {
namespace {

namespace fs = std::filesystem;

// A file in this process's scratch folder, removed when the test binary exits.
std::string temp_path(const std::string& name) {
  struct Scratch {
    fs::path dir = fs::temp_directory_path() / ("ravnest_trace_test_" + std::to_string(::getpid()));
    Scratch() { fs::create_directories(dir); }
    ~Scratch() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  };
  static Scratch scratch;
  return (scratch.dir / name).string();
}

Json read_trace(const std::string& path) {
  auto json = read_json_file(path);
  EXPECT_TRUE(json.ok()) << json.status().to_string();
  return json.ok() ? *json : Json();
}

std::vector<Json> events_with_ph(const Json& trace, const std::string& ph) {
  std::vector<Json> out;
  auto events = trace.get_array("traceEvents");
  EXPECT_TRUE(events.ok()) << events.status().to_string();
  if (!events.ok()) return out;
  for (const Json& e : **events)
    if (e.get_string("ph").value() == ph) out.push_back(e);
  return out;
}

TEST(Trace, RecorderWritesCompleteEventsAndMetadata) {
  TraceRecorder rec;
  rec.enable(1, "node1 (stage 1)");
  TraceEvent ev;
  ev.name = "F";
  ev.category = "compute";
  ev.lane = TraceLane::kCompute;
  ev.start_us = 1700000000123456;
  ev.dur_us = 250;
  ev.step = 2;
  ev.microbatch = 3;
  rec.record(ev);
  ev.name = "SEND_ACT";
  ev.category = "send";
  ev.lane = TraceLane::kComm;
  ev.start_us += 300;
  ev.dur_us = 4;
  ev.bytes = 8192;
  rec.record(ev);
  Json other = Json::object();
  other.set("node", "node1");
  rec.set_other_data(other);

  const std::string path = temp_path("one.json");
  ASSERT_TRUE(rec.write(path).ok());
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  Json trace = read_trace(path);
  EXPECT_EQ(trace.get_string("displayTimeUnit").value(), "ms");
  EXPECT_EQ(trace.get_string("otherData.node").value(), "node1");

  std::vector<Json> spans = events_with_ph(trace, "X");
  ASSERT_EQ(spans.size(), 2u);
  const Json& f = spans[0];
  EXPECT_EQ(f.get_string("name").value(), "F 3");
  EXPECT_EQ(f.get_string("cat").value(), "compute");
  EXPECT_EQ(f.get_int("ts").value(), 1700000000123456);  // exact: microseconds since the epoch
  EXPECT_EQ(f.get_int("dur").value(), 250);
  EXPECT_EQ(f.get_int("pid").value(), 1);
  EXPECT_EQ(f.get_int("tid").value(), static_cast<int>(TraceLane::kCompute));
  EXPECT_EQ(f.get_int("args.step").value(), 2);
  EXPECT_EQ(f.get_int("args.microbatch").value(), 3);
  EXPECT_EQ(f.get_int("args.bytes").value(), 0);
  EXPECT_EQ(spans[1].get_string("name").value(), "SEND_ACT 3");
  EXPECT_EQ(spans[1].get_int("tid").value(), static_cast<int>(TraceLane::kComm));
  EXPECT_EQ(spans[1].get_int("args.bytes").value(), 8192);

  // Metadata names the process and both lanes.
  std::set<std::string> names;
  for (const Json& m : events_with_ph(trace, "M")) {
    EXPECT_EQ(m.get_int("pid").value(), 1);
    if (m.get_string("name").value() == "process_name") names.insert(m.get_string("args.name").value());
    if (m.get_string("name").value() == "thread_name")
      names.insert(m.get_string("args.name").value() + "@" + std::to_string(m.get_int("tid").value()));
  }
  EXPECT_TRUE(names.count("node1 (stage 1)"));
  EXPECT_TRUE(names.count("compute@1"));
  EXPECT_TRUE(names.count("comm@2"));
}

TEST(Trace, SpanTimesTheScopeAndFeedsTotalsEvenWhenDisabled) {
  TraceRecorder off;
  SpanTotals totals;
  { TraceSpan span(off, TraceLane::kCompute, "compute", "B", 0, 1, &totals); }
  { TraceSpan span(off, TraceLane::kCompute, "compute", "B", 0, 2, &totals); }
  EXPECT_FALSE(off.enabled());
  EXPECT_TRUE(off.events().empty());
  EXPECT_EQ(totals.count, 2);
  EXPECT_GE(totals.seconds, 0.0);

  TraceRecorder on;
  on.enable(0, "node0 (stage 0)");
  const int64_t before = TraceRecorder::now_us();
  {
    TraceSpan span(on, TraceLane::kComm, "wait", "RECV_GRAD", 5, 0);
    span.add_bytes(100);
    span.add_bytes(28);
  }
  const int64_t after = TraceRecorder::now_us();
  std::vector<TraceEvent> events = on.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_STREQ(events[0].name, "RECV_GRAD");
  EXPECT_EQ(events[0].step, 5);
  EXPECT_EQ(events[0].microbatch, 0);
  EXPECT_EQ(events[0].bytes, 128);
  EXPECT_GE(events[0].start_us, before);
  EXPECT_LE(events[0].start_us + events[0].dur_us, after);
}

TEST(Trace, WriteToAMissingFolderFailsNamingThePath) {
  TraceRecorder rec;
  rec.enable(0, "node0");
  Status st = rec.write("/nonexistent-folder/trace.json");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("/nonexistent-folder/trace.json"), std::string::npos) << st.message();
}

// Two node traces that both use pid 0 (say, two runs of stage 0) and a third with pid 1.
TEST(Trace, MergeKeepsEveryEventWithDistinctPidsInTimeOrder) {
  std::vector<std::string> inputs;
  size_t total_spans = 0;
  for (int node = 0; node < 3; ++node) {
    TraceRecorder rec;
    rec.enable(node == 2 ? 1 : 0, "node" + std::to_string(node));
    for (int i = 0; i < 5; ++i) {
      TraceEvent ev;
      ev.name = "F";
      ev.microbatch = i;
      ev.start_us = 1000 + 7 * i + 3 * node;  // interleaved across the files
      ev.dur_us = 2;
      rec.record(ev);
      ++total_spans;
    }
    Json other = Json::object();
    other.set("node", "node" + std::to_string(node));
    rec.set_other_data(other);
    inputs.push_back(temp_path("part" + std::to_string(node) + ".json"));
    ASSERT_TRUE(rec.write(inputs.back()).ok());
  }
  const std::string out = temp_path("merged.json");
  ASSERT_TRUE(merge_traces(inputs, out).ok());
  Json merged = read_trace(out);

  std::vector<Json> spans = events_with_ph(merged, "X");
  ASSERT_EQ(spans.size(), total_spans);
  for (size_t i = 1; i < spans.size(); ++i)
    EXPECT_LE(spans[i - 1].get_int("ts").value(), spans[i].get_int("ts").value()) << "event " << i;
  // Each input got its own pid, named by its process_name metadata.
  std::set<int64_t> span_pids;
  for (const Json& s : spans) span_pids.insert(s.get_int("pid").value());
  EXPECT_EQ(span_pids.size(), 3u);
  std::set<std::string> process_names;
  std::set<int64_t> named_pids;
  for (const Json& m : events_with_ph(merged, "M"))
    if (m.get_string("name").value() == "process_name") {
      process_names.insert(m.get_string("args.name").value());
      named_pids.insert(m.get_int("pid").value());
    }
  EXPECT_EQ(process_names, (std::set<std::string>{"node0", "node1", "node2"}));
  EXPECT_EQ(named_pids, span_pids);
  // Metadata comes first.
  const auto& all = **merged.get_array("traceEvents");
  bool seen_span = false;
  for (const Json& e : all) {
    bool is_meta = e.get_string("ph").value() == "M";
    EXPECT_FALSE(seen_span && is_meta);
    seen_span = seen_span || !is_meta;
  }
  EXPECT_EQ(merged.get_array("otherData.merged_from").value()->size(), 3u);
  EXPECT_EQ(merged.get_string("otherData.merged_from[2].node").value(), "node2");
}

TEST(Trace, MergeNamesTheBadInput) {
  const std::string bad = temp_path("bad.json");
  std::ofstream(bad) << R"({"traceEvents":[{"ph":"X","ts":1}]})";  // no pid
  Status st = merge_traces({bad}, temp_path("never.json"));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(bad), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("pid"), std::string::npos) << st.message();
  EXPECT_FALSE(fs::exists(temp_path("never.json")));

  Status missing = merge_traces({temp_path("absent.json")}, temp_path("never.json"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("absent.json"), std::string::npos) << missing.message();
  EXPECT_FALSE(merge_traces({}, temp_path("never.json")).ok());
}

}  // namespace
}  // namespace ravnest::rt
