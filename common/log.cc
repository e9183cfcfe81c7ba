#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace ravnest {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_verbose{-1};  // -1: not yet read from the environment
std::mutex g_mutex;
std::string g_prefix;
}  // namespace

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }

bool verbose() {
  int v = g_verbose.load();
  if (v < 0) {
    const char* env = std::getenv("RAVNEST_VERBOSE");
    v = (env && *env && std::string(env) != "0") ? 1 : 0;
    g_verbose = v;
  }
  return v == 1;
}

void set_verbose(bool on) { g_verbose = on ? 1 : 0; }

void set_log_prefix(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_prefix = prefix;
}

void log_line(LogLevel level, const std::string& message) {
  static const char* names[] = {"debug", "info", "warn", "error"};
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_prefix.empty())
    std::fprintf(stderr, "[%s] %s\n", names[static_cast<int>(level)], message.c_str());
  else
    std::fprintf(stderr, "[%s %s] %s\n", g_prefix.c_str(), names[static_cast<int>(level)], message.c_str());
}

}  // namespace ravnest
