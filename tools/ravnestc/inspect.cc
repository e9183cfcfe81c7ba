// `ravnestc inspect MODEL.onnx [--batch N] [--shape NAME=AxB...]...`: imports the
// model as the compiler would and prints the cost model's view of every node.
#include <cstdio>
#include <cstring>
#include <string>

#include "frontend/import.h"
#include "frontend/inspect.h"
#include "tools/ravnestc/commands.h"

namespace {

constexpr const char* kUsage =
    "usage: ravnestc inspect MODEL.onnx [--batch N] [--shape NAME=AxBx...]...\n"
    "  --batch N             set dim 0 of every model input whose dim 0 is symbolic\n"
    "  --shape NAME=AxB...   set the full shape of input NAME (repeatable)\n";

}  // namespace

int run_inspect(int argc, char** argv) {
  using namespace ravnest;
  using namespace ravnest::cli;
  std::string model;
  fe::ImportOptions options;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return kExitOk;
    }
    bool is_batch = arg == "--batch" || arg.rfind("--batch=", 0) == 0;
    bool is_shape = arg == "--shape" || arg.rfind("--shape=", 0) == 0;
    if (is_batch || is_shape) {
      std::string flag = is_batch ? "--batch" : "--shape";
      std::string value;
      if (arg.size() > flag.size()) {
        value = arg.substr(flag.size() + 1);
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return report_usage(flag + " needs a value", kUsage);
      }
      Status status = is_batch ? fe::set_batch_option(value, options) : fe::add_shape_option(value, options);
      if (!status.ok()) return report_usage(status.message(), kUsage);
      continue;
    }
    if (!arg.empty() && arg[0] == '-') return report_usage("unknown option '" + arg + "'", kUsage);
    if (!model.empty()) return report_usage("more than one model given ('" + model + "', '" + arg + "')", kUsage);
    model = arg;
  }
  if (model.empty()) return report_usage("no model given", kUsage);
  auto graph = fe::import_model(model, options);
  if (!graph.ok()) return report_error(graph.status());
  auto report = fe::inspect_graph(graph.value());
  if (!report.ok()) return report_error(report.status());
  std::fputs(fe::format_report(report.value()).c_str(), stdout);
  return kExitOk;
}
