// Minimal leveled logging to stderr. RAVNEST_VERBOSE=1 (or set_verbose) turns on
// the explanations of every choice (kernel selection, memory plan, partition).
#pragma once

#include <sstream>
#include <string>

namespace ravnest {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
bool verbose();
void set_verbose(bool on);
// Prefix for every line of this process, e.g. "node1".
void set_log_prefix(const std::string& prefix);
void log_line(LogLevel level, const std::string& message);

template <typename... Parts>
void log(LogLevel level, const Parts&... parts) {
  if (level < log_level() && !(level == LogLevel::kDebug && verbose())) return;
  std::ostringstream out;
  (out << ... << parts);
  log_line(level, out.str());
}

}  // namespace ravnest

#define RN_LOG_INFO(...) ::ravnest::log(::ravnest::LogLevel::kInfo, __VA_ARGS__)
#define RN_LOG_WARN(...) ::ravnest::log(::ravnest::LogLevel::kWarn, __VA_ARGS__)
#define RN_LOG_ERROR(...) ::ravnest::log(::ravnest::LogLevel::kError, __VA_ARGS__)
#define RN_VERBOSE(...) \
  do { if (::ravnest::verbose()) ::ravnest::log(::ravnest::LogLevel::kDebug, __VA_ARGS__); } while (0)
