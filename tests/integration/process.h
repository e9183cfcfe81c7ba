// Running the real command-line programs from tests: fork/exec with captured
// output and a hard time limit (the child is killed when it runs past it).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ravnest::testing {

struct ProcessResult {
  int exit_code = -1;      // -1 when killed by a signal
  int signal = 0;
  bool timed_out = false;
  std::string out, err;
  double seconds = 0;
};

// Runs argv[0] with the arguments; `extra_env` entries are "NAME=VALUE".
ProcessResult run_process(const std::vector<std::string>& argv, double timeout_s,
                          const std::vector<std::string>& extra_env = {});

// A started process whose output is collected until it ends or is killed.
class Process {
 public:
  explicit Process(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env = {});
  ~Process();
  int pid() const { return pid_; }
  // Reads available output for up to `timeout_s`, until `needle` appears in stdout (stderr).
  bool wait_for_output(const std::string& needle, double timeout_s) { return wait_for(result_.out, needle, timeout_s); }
  bool wait_for_error(const std::string& needle, double timeout_s) { return wait_for(result_.err, needle, timeout_s); }
  // Standard output read so far (by wait_for_output).
  const std::string& output() const { return result_.out; }
  // Waits for exit (killing at the deadline) and returns the result.
  ProcessResult wait(double timeout_s);
  void kill_now(int signal);

 private:
  void pump(int timeout_ms);
  bool wait_for(const std::string& stream, const std::string& needle, double timeout_s);
  int pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  ProcessResult result_;
  bool done_ = false;
};

std::string binary(const std::string& name);  // path of a built tool
std::string source_path(const std::string& rel);
std::string temp_dir(const std::string& name);  // fresh, empty
bool have_fashion_mnist();

// The file `ravnest-launch --losses` writes ("step loss" per line): the losses in order.
std::vector<double> read_losses(const std::string& path);
// The tensors of a Ravnest tensor file by name; a test failure (and an empty map) when it cannot be read.
std::map<std::string, rt::Tensor> read_tensors(const std::string& path);
// max |a - b| / max |b| over two float32 tensors of equal size (b all zero: max |a - b|).
double relative_diff(const rt::Tensor& a, const rt::Tensor& b);
// Pids of the ravnest-rt processes whose command line contains `needle` (from /proc):
// the nodes a test's ravnest-launch started, found by their bundle path.
std::vector<int> ravnest_rt_pids(const std::string& needle);

}  // namespace ravnest::testing
