// Timelines in Chrome trace-event JSON, viewable in Perfetto or chrome://tracing.
//
// Guarantees:
//  * A disabled TraceRecorder records nothing; a TraceSpan on it costs two
//    clock reads (its duration still feeds the optional SpanTotals).
//  * Events are complete events ("ph":"X") whose "ts"/"dur" are integral
//    microseconds of std::chrono::system_clock since the Unix epoch, so traces
//    of processes on one machine share a time axis. Start and end are each
//    truncated to the microsecond and "dur" is their difference, so an event
//    that ends before another starts (in real time) has ts + dur <= the other's ts.
//  * pid is the process id given to enable() (the stage), tid the lane
//    (compute, comm, and wire: when the transport's thread wrote a frame); every
//    event carries args {step, microbatch, bytes}; a span on the compute lane also
//    carries cpu_us, the CPU time its thread spent in it (CLOCK_THREAD_CPUTIME_ID:
//    time the thread was preempted is not in it, OpenMP worker threads are not
//    either), so compute measured on an oversubscribed machine stays comparable. write() adds process_name,
//    process_sort_index and thread_name metadata ("ph":"M").
//  * record() is safe to call from several threads.
//  * write() and merge_traces() write atomically (PATH.tmp, then rename): a
//    reader sees the old file or the whole new one.
//  * merge_traces() keeps every event of every input, gives each input its own
//    pid (its own when no earlier input used it, else the next unused one),
//    puts metadata first and sorts the rest by (ts, pid, tid), stably.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace ravnest::rt {

// A timeline row of one process. The tid of a lane is its value.
enum class TraceLane : int {
  kCompute = 1,  // F, B, W, STEP
  kComm = 2,     // blocking on receives, enqueueing sends
  kWire = 3,     // the transport's thread writing a frame to its socket
};
const char* trace_lane_name(TraceLane lane);

struct TraceEvent {
  const char* name = "";      // static storage: "F", "RECV_ACT"; shown as "F 3" when microbatch >= 0
  const char* category = "";  // static storage: "compute", "wait", "send"
  TraceLane lane = TraceLane::kCompute;
  int64_t start_us = 0;  // system_clock, since the Unix epoch
  int64_t dur_us = 0;
  int64_t step = -1;
  int32_t microbatch = -1;
  int64_t bytes = 0;
  int64_t cpu_us = -1;  // CPU time of the recording thread in the span; -1: not measured
};

// Sum and count of durations, e.g. of every F of a run.
struct SpanTotals {
  double seconds = 0;
  int64_t count = 0;
  double mean_s() const { return count ? seconds / static_cast<double>(count) : 0.0; }
};

class TraceRecorder {
 public:
  // Events beyond this many are dropped (and counted in otherData.dropped_events).
  static constexpr size_t kMaxEvents = size_t{1} << 22;

  TraceRecorder() = default;  // disabled
  TraceRecorder(const TraceRecorder&) = delete;
  TraceRecorder& operator=(const TraceRecorder&) = delete;

  // Starts recording as process `pid`, named `process_name` ("node1 (stage 1)").
  void enable(int pid, std::string process_name);
  bool enabled() const { return enabled_; }
  // Extra keys written under "otherData" (an object; replaces earlier ones).
  void set_other_data(Json other);

  // Microseconds of system_clock since the Unix epoch.
  static int64_t now_us();
  // Nanoseconds of CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID).
  static int64_t thread_cpu_ns();

  void record(const TraceEvent& event);  // no-op when disabled
  std::vector<TraceEvent> events() const;

  // Writes {"traceEvents":[...],"displayTimeUnit":"ms","otherData":{...}}.
  Status write(const std::string& path) const;

 private:
  bool enabled_ = false;
  int pid_ = 0;
  std::string process_name_;
  Json other_ = Json::object();
  mutable std::mutex mu_;
  std::vector<TraceEvent> events_;
  int64_t dropped_ = 0;
};

// Times a scope: on destruction, adds the duration to `totals` (when given)
// and records an event on `recorder` (when enabled).
class TraceSpan {
 public:
  TraceSpan(TraceRecorder& recorder, TraceLane lane, const char* category, const char* name, int64_t step,
            int microbatch, SpanTotals* totals = nullptr);
  ~TraceSpan();
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;
  void add_bytes(int64_t bytes) { event_.bytes += bytes; }

 private:
  TraceRecorder& recorder_;
  SpanTotals* totals_;
  TraceEvent event_;
  int64_t cpu_start_us_ = -1;
};

// Merges per-node trace files (written by TraceRecorder::write) into one.
// otherData of the result: {"merged_from": [each input's otherData, in order]}.
// Errors name the input file and what is wrong with it.
// A metadata event ("ph":"M"): process_name, thread_name, process_sort_index...
Json trace_metadata_args(const char* what, int64_t pid, int tid, Json args);
// The same with args {key: value}.
Json trace_metadata(const char* what, int64_t pid, int tid, const char* key, Json value);

Status merge_traces(const std::vector<std::string>& inputs, const std::string& output);

// Writes a whole trace document ({"traceEvents": [...], "otherData": {...}}, as
// merge_traces writes it and read_json_file reads it back) to `path`, one event
// per line, atomically. Errors name the path, or the document's missing field.
Status write_trace_document(const Json& document, const std::string& path);

}  // namespace ravnest::rt
