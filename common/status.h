// Status and Result<T>: how every fallible function in Ravnest reports failure.
//
// Invariant: a Status is either ok() or carries a Code and a message that names
// what is wrong and what to do about it. Exceptions are used only at the
// command-line boundary (tools/); libraries return Status/Result.
#pragma once

#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

namespace ravnest {

enum class Code {
  kOk = 0,
  kInvalidArgument,  // bad user input: flags, files, models
  kNotFound,         // a file, node, value or peer that does not exist
  kUnsupported,      // an op, attribute or opset we do not handle
  kCorrupt,          // a bundle or frame that fails its digest or checks
  kNetwork,          // recoverable transport failure: peer gone, timeout
  kTimeout,          // a deadline passed
  kResourceExhausted,
  kInternal,         // a bug in Ravnest
};

const char* code_name(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return Status(); }
  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "Unsupported: node 'conv1' ..." — what the user sees.
  std::string to_string() const;
  // Returns a copy with `context` prepended ("loading bundle x: <message>").
  Status with_context(const std::string& context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status ok_status() { return Status(); }

// Builds a message from stream-able parts: error(Code::kNotFound, "file ", p, " missing").
template <typename... Parts>
Status error(Code code, const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return Status(code, out.str());
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Status(Code::kInternal, "Result built from an ok Status without a value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

// Concatenates stream-able parts into a string.
template <typename... Parts>
std::string str_cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

[[noreturn]] void enforce_failed(const char* file, int line, const char* cond, const std::string& msg);

}  // namespace ravnest

#define RN_CONCAT_INNER(a, b) a##b
#define RN_CONCAT(a, b) RN_CONCAT_INNER(a, b)

#define RN_RETURN_IF_ERROR(expr)                    \
  do {                                              \
    ::ravnest::Status rn_status_ = (expr);          \
    if (!rn_status_.ok()) return rn_status_;        \
  } while (0)

#define RN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()

// RN_ASSIGN_OR_RETURN(auto x, f()); — returns f()'s Status on failure.
#define RN_ASSIGN_OR_RETURN(lhs, expr) RN_ASSIGN_OR_RETURN_IMPL(RN_CONCAT(rn_result_, __LINE__), lhs, expr)

// Invariant check for bugs (not user errors): aborts with file, line and message.
#define RN_ENFORCE(cond, ...)                                                                  \
  do {                                                                                         \
    if (!(cond)) ::ravnest::enforce_failed(__FILE__, __LINE__, #cond, ::ravnest::str_cat(__VA_ARGS__)); \
  } while (0)
