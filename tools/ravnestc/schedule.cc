// `ravnestc schedule`: generates a pipeline schedule, simulates one step of it
// against per-stage F/B/W costs and prints makespan, bubble ratio and peak memory;
// optionally the text grid (--text) and an SVG timeline (--svg).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "codegen/schedule.h"
#include "codegen/simulator.h"
#include "tools/ravnestc/commands.h"

namespace {

using namespace ravnest;

constexpr const char* kUsage =
    "usage: ravnestc schedule --stages P --microbatches M --schedule KIND\n"
    "         [--costs F,B,W | --stage-costs f0,b0,w0:f1,b1,w1:...] [--comm T]\n"
    "         [--memory-limit N] [--svg OUT.svg] [--text]\n"
    "  --schedule KIND      gpipe, 1f1b, zb-h1, zb-h2 or auto\n"
    "  --costs F,B,W        seconds of F, B and W on every stage (default 1,1,1)\n"
    "  --stage-costs ...    seconds per stage, one f,b,w triple per stage separated by ':'\n"
    "  --comm T             seconds from a send to its arrival (default 0)\n"
    "  --memory-limit N     micro-batches alive per stage; auto optimises under it, the\n"
    "                       simulation rejects any schedule over it (default: none; auto 2P-1)\n"
    "  --svg OUT.svg        write the timeline as SVG\n"
    "  --text               print one row per stage, one column per time unit\n";

Result<double> parse_number(const std::string& text, const std::string& what) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(v >= 0) || v > 1e12)
    return error(Code::kInvalidArgument, what, " '", text, "' is not a non-negative number");
  return v;
}

Result<int> parse_count(const std::string& text, const std::string& what, int max) {
  RN_ASSIGN_OR_RETURN(double v, parse_number(text, what));
  if (v < 1 || v > max || v != static_cast<int>(v))
    return error(Code::kInvalidArgument, what, " '", text, "' must be a whole number in 1..", max);
  return static_cast<int>(v);
}

Result<cg::StageCost> parse_triple(const std::string& text) {
  cg::StageCost c;
  double* fields[] = {&c.f, &c.b, &c.w};
  size_t start = 0;
  for (int i = 0; i < 3; ++i) {
    size_t comma = text.find(',', start);
    if ((i < 2) != (comma != std::string::npos))
      return error(Code::kInvalidArgument, "cost '", text, "' must be three numbers F,B,W");
    RN_ASSIGN_OR_RETURN(*fields[i], parse_number(text.substr(start, comma - start), "cost"));
    start = comma + 1;
  }
  return c;
}

}  // namespace

int run_schedule(int argc, char** argv) {
  using namespace ravnest::cli;
  int stages = 0, microbatches = 0;
  std::string kind, svg, costs_text, stage_costs_text;
  bool text = false;
  cg::ScheduleCosts costs;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return kExitOk;
    }
    if (arg == "--text") {
      text = true;
      continue;
    }
    std::string value;
    size_t eq = arg.find('=');
    std::string flag = arg.substr(0, eq);
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return report_usage(arg + " needs a value", kUsage);
    }
    Status st;
    if (flag == "--stages") {
      auto v = parse_count(value, "--stages", 4096);
      st = v.status();
      if (v.ok()) stages = *v;
    } else if (flag == "--microbatches") {
      auto v = parse_count(value, "--microbatches", 65536);
      st = v.status();
      if (v.ok()) microbatches = *v;
    } else if (flag == "--memory-limit") {
      auto v = parse_count(value, "--memory-limit", 1 << 20);
      st = v.status();
      if (v.ok()) costs.memory_limit = *v;
    } else if (flag == "--comm") {
      auto v = parse_number(value, "--comm");
      st = v.status();
      if (v.ok()) costs.comm = *v;
    } else if (flag == "--schedule") {
      kind = value;
    } else if (flag == "--costs") {
      costs_text = value;
    } else if (flag == "--stage-costs") {
      stage_costs_text = value;
    } else if (flag == "--svg") {
      svg = value;
    } else {
      return report_usage("unknown option '" + arg + "'", kUsage);
    }
    if (!st.ok()) return report_usage(st.message(), kUsage);
  }
  if (stages == 0 || microbatches == 0 || kind.empty())
    return report_usage("--stages, --microbatches and --schedule are required", kUsage);
  if (!costs_text.empty() && !stage_costs_text.empty())
    return report_usage("give --costs or --stage-costs, not both", kUsage);
  if (!stage_costs_text.empty()) {
    size_t start = 0;
    for (;;) {
      size_t colon = stage_costs_text.find(':', start);
      auto c = parse_triple(stage_costs_text.substr(start, colon - start));
      if (!c.ok()) return report_usage(c.status().message(), kUsage);
      costs.stages.push_back(*c);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    if (static_cast<int>(costs.stages.size()) != stages)
      return report_usage("--stage-costs has " + std::to_string(costs.stages.size()) + " stages, --stages says " +
                              std::to_string(stages),
                          kUsage);
  } else {
    cg::StageCost c;
    if (!costs_text.empty()) {
      auto parsed = parse_triple(costs_text);
      if (!parsed.ok()) return report_usage(parsed.status().message(), kUsage);
      c = *parsed;
    }
    costs.stages.assign(static_cast<size_t>(stages), c);
  }

  auto schedules = cg::make_schedules(kind, stages, microbatches, costs);
  if (!schedules.ok()) return report_error(schedules.status());
  auto result = cg::simulate(*schedules, costs.stages, cg::SimOptions{costs.comm, costs.memory_limit, 0});
  if (!result.ok()) return report_error(result.status());
  const cg::SimResult& r = *result;
  std::printf("schedule %s: %d stages, %d micro-batches\n", kind.c_str(), stages, microbatches);
  std::printf("makespan: %.6g\n", r.makespan);
  std::printf("bubble ratio: %.4f (steady-state %.4f)\n", r.bubble_ratio, r.steady_bubble_ratio);
  std::printf("peak in-flight micro-batches per stage:");
  for (int v : r.peak_in_flight) std::printf(" %d", v);
  std::printf("\n");
  if (text) std::fputs(cg::render_text(r).c_str(), stdout);
  if (!svg.empty()) {
    std::ofstream out(svg, std::ios::trunc);
    out << cg::render_svg(r);
    if (!out) return report_error(error(Code::kInvalidArgument, "cannot write the SVG to '", svg, "'"));
    std::printf("wrote %s\n", svg.c_str());
  }
  return kExitOk;
}
