// ravnestc: the Ravnest compiler's command line. Dispatches to the subcommands of
// kCommands; adding one is a declaration in commands.h and a row here. This is the
// only place exceptions are caught (as internal errors).
#include <cstdio>
#include <cstring>
#include <exception>

#include "tools/ravnestc/commands.h"

namespace ravnest::cli {
namespace {

struct Command {
  const char* name;
  int (*run)(int argc, char** argv);
  const char* help;
};

constexpr Command kCommands[] = {
    {"inspect", run_inspect, "print per-node shapes, parameters, FLOPs and memory of an ONNX model"},
    {"compile", run_compile, "compile an ONNX model into per-machine bundles"},
    {"schedule", run_schedule, "simulate a pipeline schedule: makespan, bubble ratio, timeline"},
};

void print_help(std::FILE* out) {
  std::fprintf(out, "usage: ravnestc COMMAND [ARGS...]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.help);
  std::fprintf(out, "\n'ravnestc COMMAND --help' describes a command's arguments.\n");
}

}  // namespace

int report_error(const Status& status) {
  std::fprintf(stderr, "ravnestc: error: %s\n", status.message().c_str());
  return kExitError;
}

int report_usage(const std::string& message, const char* usage) {
  std::fprintf(stderr, "ravnestc: %s\n%s", message.c_str(), usage);
  return kExitUsage;
}

}  // namespace ravnest::cli

int main(int argc, char** argv) {
  using namespace ravnest::cli;
  if (argc < 2) {
    print_help(stderr);
    return kExitUsage;
  }
  if (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    print_help(stdout);
    return kExitOk;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.run(argc - 2, argv + 2);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ravnestc: error: internal error in '%s': %s\n", c.name, e.what());
      return kExitError;
    }
  }
  std::fprintf(stderr, "ravnestc: unknown command '%s'\n", argv[1]);
  print_help(stderr);
  return kExitUsage;
}
