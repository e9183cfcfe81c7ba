// The subcommands of `ravnestc`. Each takes the arguments after its name
// (`ravnestc inspect a.onnx --batch 8` calls run_inspect with {"a.onnx", "--batch", "8"})
// and returns the process exit code: 0 success, 1 error (message printed as
// "ravnestc: error: ..."), 2 bad usage. Adding a command: declare it here and add
// a row to kCommands in main.cc.
#pragma once

#include <string>

#include "common/status.h"

int run_inspect(int argc, char** argv);
int run_compile(int argc, char** argv);
int run_schedule(int argc, char** argv);

namespace ravnest::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// Prints "ravnestc: error: <message>" to stderr and returns kExitError.
int report_error(const Status& status);
// Prints "ravnestc: <message>" and `usage` to stderr and returns kExitUsage.
int report_usage(const std::string& message, const char* usage);

}  // namespace ravnest::cli
