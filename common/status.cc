#include "common/status.h"

#include <cstdio>

namespace ravnest {

const char* code_name(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "InvalidArgument";
    case Code::kNotFound: return "NotFound";
    case Code::kUnsupported: return "Unsupported";
    case Code::kCorrupt: return "Corrupt";
    case Code::kNetwork: return "Network";
    case Code::kTimeout: return "Timeout";
    case Code::kResourceExhausted: return "ResourceExhausted";
    case Code::kInternal: return "Internal";
  }
  return "Unknown";
}

std::string Status::to_string() const {
  if (ok()) return "OK";
  return std::string(code_name(code_)) + ": " + message_;
}

Status Status::with_context(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + message_);
}

void enforce_failed(const char* file, int line, const char* cond, const std::string& msg) {
  std::fprintf(stderr, "ravnest internal error at %s:%d: check '%s' failed%s%s\n", file, line, cond,
               msg.empty() ? "" : ": ", msg.c_str());
  std::abort();
}

}  // namespace ravnest
