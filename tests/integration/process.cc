#include "tests/integration/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <cmath>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

#include "runtime/tensor_file.h"

namespace ravnest::testing {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::map<std::string, rt::Tensor> read_tensors(const std::string& path) {
  std::map<std::string, rt::Tensor> out;
  auto file = rt::read_tensor_file(path);
  EXPECT_TRUE(file.ok()) << file.status().to_string();
  if (file.ok())
    for (auto& [k, v] : *file) out[k] = v;
  return out;
}

Process::Process(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env) {
  int out[2], err[2];
  if (pipe(out) != 0 || pipe(err) != 0) return;
  pid_ = fork();
  if (pid_ == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    close(out[0]); close(out[1]); close(err[0]); close(err[1]);
    for (const auto& e : extra_env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "cannot exec %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
  fcntl(out_fd_, F_SETFL, O_NONBLOCK);
  fcntl(err_fd_, F_SETFL, O_NONBLOCK);
}

Process::~Process() {
  if (!done_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) close(out_fd_);
  if (err_fd_ >= 0) close(err_fd_);
}

void Process::pump(int timeout_ms) {
  pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  poll(fds, 2, timeout_ms);
  char buf[65536];
  for (auto [fd, dst] : {std::pair{out_fd_, &result_.out}, std::pair{err_fd_, &result_.err}}) {
    if (fd < 0) continue;
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) > 0) dst->append(buf, static_cast<size_t>(got));
  }
}

bool Process::wait_for(const std::string& stream, const std::string& needle, double timeout_s) {
  auto end = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  while (Clock::now() < end) {
    pump(50);
    if (stream.find(needle) != std::string::npos) return true;
    int status;
    if (!done_ && waitpid(pid_, &status, WNOHANG) == pid_) {
      done_ = true;
      pump(0);
      result_.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      result_.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
      return stream.find(needle) != std::string::npos;
    }
  }
  return false;
}

void Process::kill_now(int signal) {
  if (!done_ && pid_ > 0) ::kill(pid_, signal);
}

ProcessResult Process::wait(double timeout_s) {
  auto start = Clock::now();
  auto end = start + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  while (!done_) {
    pump(50);
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      done_ = true;
      result_.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      result_.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
      break;
    }
    if (Clock::now() > end) {
      result_.timed_out = true;
      ::kill(pid_, SIGKILL);
    }
  }
  pump(0);
  result_.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result_;
}

ProcessResult run_process(const std::vector<std::string>& argv, double timeout_s,
                          const std::vector<std::string>& extra_env) {
  Process p(argv, extra_env);
  return p.wait(timeout_s);
}

std::string binary(const std::string& name) { return std::string(RAVNEST_BINARY_DIR) + "/tools/" + name; }
std::string source_path(const std::string& rel) { return std::string(RAVNEST_SOURCE_DIR) + "/" + rel; }

std::string temp_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("ravnest-test-" + name + "-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

bool have_fashion_mnist() {
  return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
}

std::vector<int> ravnest_rt_pids(const std::string& needle) {
  std::vector<int> pids;
  DIR* proc = opendir("/proc");
  if (!proc) return pids;
  while (dirent* e = readdir(proc)) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(needle) != std::string::npos && cmdline.find("ravnest-rt") != std::string::npos)
      pids.push_back(pid);
  }
  closedir(proc);
  return pids;
}

std::vector<double> read_losses(const std::string& path) {
  std::ifstream in(path);
  std::vector<double> losses;
  long long step;
  double loss;
  while (in >> step >> loss) losses.push_back(loss);
  return losses;
}

double relative_diff(const rt::Tensor& a, const rt::Tensor& b) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b.data<float>()[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace ravnest::testing
