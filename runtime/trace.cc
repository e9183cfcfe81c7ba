#include "runtime/trace.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <tuple>
#include <utility>

namespace ravnest::rt {
namespace {

Json event_json(const TraceEvent& ev, int pid) {
  Json args = Json::object();
  args.set("step", ev.step);
  args.set("microbatch", static_cast<int64_t>(ev.microbatch));
  args.set("bytes", ev.bytes);
  if (ev.cpu_us >= 0) args.set("cpu_us", ev.cpu_us);
  Json e = Json::object();
  e.set("name", ev.microbatch >= 0 ? str_cat(ev.name, " ", ev.microbatch) : std::string(ev.name));
  e.set("cat", ev.category);
  e.set("ph", "X");
  e.set("ts", ev.start_us);
  e.set("dur", ev.dur_us);
  e.set("pid", pid);
  e.set("tid", static_cast<int>(ev.lane));
  e.set("args", std::move(args));
  return e;
}

// One event per line: large traces stay readable and diffable.
std::string trace_document(const std::vector<Json>& events, const Json& other) {
  std::string out = "{\"traceEvents\":[\n";
  for (size_t i = 0; i < events.size(); ++i) {
    out += events[i].dump(0);
    out += i + 1 < events.size() ? ",\n" : "\n";
  }
  out += "],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":";
  out += other.dump(0);
  out += "}\n";
  return out;
}

// PATH.tmp, fsync, rename: readers see the old file or the whole new one.
Status write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return error(Code::kInvalidArgument, "cannot create trace file '", tmp, "': ", std::strerror(errno));
  Status st;
  for (size_t done = 0; st.ok() && done < text.size();) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      st = error(Code::kResourceExhausted, "writing trace file '", tmp, "' failed: ", std::strerror(errno));
    else
      done += static_cast<size_t>(n);
  }
  if (st.ok() && ::fsync(fd) != 0)
    st = error(Code::kResourceExhausted, "fsync of trace file '", tmp, "' failed: ", std::strerror(errno));
  if (::close(fd) != 0 && st.ok())
    st = error(Code::kResourceExhausted, "closing trace file '", tmp, "' failed: ", std::strerror(errno));
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0)
    st = error(Code::kResourceExhausted, "renaming '", tmp, "' to '", path, "' failed: ", std::strerror(errno));
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

}  // namespace

Json trace_metadata_args(const char* what, int64_t pid, int tid, Json args) {
  Json e = Json::object();
  e.set("name", what);
  e.set("ph", "M");
  e.set("pid", pid);
  e.set("tid", tid);
  e.set("args", std::move(args));
  return e;
}

Json trace_metadata(const char* what, int64_t pid, int tid, const char* key, Json value) {
  Json args = Json::object();
  args.set(key, std::move(value));
  return trace_metadata_args(what, pid, tid, std::move(args));
}

const char* trace_lane_name(TraceLane lane) {
  switch (lane) {
    case TraceLane::kCompute: return "compute";
    case TraceLane::kComm: return "comm";
    case TraceLane::kWire: return "wire";
  }
  return "?";
}

void TraceRecorder::enable(int pid, std::string process_name) {
  std::lock_guard<std::mutex> lock(mu_);
  enabled_ = true;
  pid_ = pid;
  process_name_ = std::move(process_name);
}

void TraceRecorder::set_other_data(Json other) {
  std::lock_guard<std::mutex> lock(mu_);
  other_ = std::move(other);
}

int64_t TraceRecorder::now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t TraceRecorder::thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void TraceRecorder::record(const TraceEvent& event) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (events_.size() >= kMaxEvents) {
    ++dropped_;
    return;
  }
  events_.push_back(event);
}

std::vector<TraceEvent> TraceRecorder::events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

Status TraceRecorder::write(const std::string& path) const {
  std::vector<Json> out;
  Json other;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out.push_back(trace_metadata("process_name", pid_, 0, "name", process_name_));
    Json sort = Json::object();
    sort.set("sort_index", pid_);
    out.push_back(trace_metadata_args("process_sort_index", pid_, 0, std::move(sort)));
    for (TraceLane lane : {TraceLane::kCompute, TraceLane::kComm, TraceLane::kWire})
      out.push_back(trace_metadata("thread_name", pid_, static_cast<int>(lane), "name", trace_lane_name(lane)));
    for (const TraceEvent& ev : events_) out.push_back(event_json(ev, pid_));
    other = other_.is_object() ? other_ : Json::object();
    other.set("clock", "system_clock microseconds since the Unix epoch");
    if (dropped_) other.set("dropped_events", dropped_);
  }
  return write_atomically(path, trace_document(out, other));
}

TraceSpan::TraceSpan(TraceRecorder& recorder, TraceLane lane, const char* category, const char* name, int64_t step,
                     int microbatch, SpanTotals* totals)
    : recorder_(recorder), totals_(totals) {
  event_.name = name;
  event_.category = category;
  event_.lane = lane;
  event_.step = step;
  event_.microbatch = microbatch;
  event_.start_us = TraceRecorder::now_us();
  if (lane == TraceLane::kCompute && recorder.enabled()) cpu_start_us_ = TraceRecorder::thread_cpu_ns() / 1000;
}

TraceSpan::~TraceSpan() {
  event_.dur_us = std::max<int64_t>(0, TraceRecorder::now_us() - event_.start_us);
  if (cpu_start_us_ >= 0)
    event_.cpu_us = std::max<int64_t>(0, TraceRecorder::thread_cpu_ns() / 1000 - cpu_start_us_);
  if (totals_) {
    totals_->seconds += static_cast<double>(event_.dur_us) * 1e-6;
    ++totals_->count;
  }
  recorder_.record(event_);
}

Status merge_traces(const std::vector<std::string>& inputs, const std::string& output) {
  if (inputs.empty()) return error(Code::kInvalidArgument, "merging traces into '", output, "': no input traces");
  using SortKey = std::tuple<double, int64_t, int64_t>;  // ts, pid, tid
  std::vector<Json> meta;
  std::vector<std::pair<SortKey, Json>> spans;
  Json merged_from = Json::array();
  std::set<int64_t> used;
  for (const std::string& path : inputs) {
    RN_ASSIGN_OR_RETURN(Json doc, read_json_file(path));
    auto events = doc.get_array("traceEvents");
    if (!events.ok()) return events.status().with_context("trace '" + path + "'");
    // This input's pids, renumbered where an earlier input took them.
    std::map<int64_t, int64_t> pid_map;
    for (size_t i = 0; i < (*events)->size(); ++i) {
      Json ev = (*events)->at(i);
      const std::string where = str_cat("trace '", path, "', traceEvents[", i, "]");
      if (!ev.is_object()) return error(Code::kInvalidArgument, where, ": expected an object, found ", ev.describe());
      auto pid = ev.get_int("pid");
      if (!pid.ok()) return pid.status().with_context(where);
      auto ph = ev.get_string("ph");
      if (!ph.ok()) return ph.status().with_context(where);
      auto [it, fresh] = pid_map.emplace(*pid, *pid);
      if (fresh) {
        if (used.count(*pid)) it->second = *used.rbegin() + 1;
        used.insert(it->second);
      }
      ev.set("pid", it->second);
      if (*ph == "M") {
        meta.push_back(std::move(ev));
      } else {
        auto ts = ev.get_double("ts");
        if (!ts.ok()) return ts.status().with_context(where);
        auto tid = ev.get_int_or("tid", 0);
        if (!tid.ok()) return tid.status().with_context(where);
        spans.emplace_back(SortKey{*ts, it->second, *tid}, std::move(ev));
      }
    }
    const Json* other = doc.find("otherData");
    merged_from.push_back(other ? *other : Json::object());
  }
  std::stable_sort(spans.begin(), spans.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [key, ev] : spans) meta.push_back(std::move(ev));
  Json other = Json::object();
  other.set("merged_from", std::move(merged_from));
  return write_atomically(output, trace_document(meta, other));
}

Status write_trace_document(const Json& document, const std::string& path) {
  auto events = document.get_array("traceEvents");
  if (!events.ok()) return events.status().with_context("writing trace '" + path + "'");
  const Json* other = document.find("otherData");
  return write_atomically(path, trace_document(**events, other ? *other : Json::object()));
}

}  // namespace ravnest::rt
