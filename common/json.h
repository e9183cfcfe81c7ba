// A small JSON value, parser and printer for manifests, schedules and reports.
//
// Guarantees: parse_json accepts exactly RFC 8259 JSON (one value, optional
// surrounding whitespace), nests at most kMaxJsonDepth deep, rejects duplicate
// object keys, and reports errors as "line:column: expected ..., found ...".
// Objects keep their keys in insertion order, so dump() output is stable.
// Numbers keep a double and, when the value is integral and fits, an exact int64
// (so 9007199254740993 survives a round trip). dump() of a parsed value parses
// back to an equal value. Typed getters take a key path ("training.batch",
// "stages[2].name") and their errors name that path, what was expected and what
// was found.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace ravnest {

inline constexpr int kMaxJsonDepth = 128;

class Json {
 public:
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;                                                                                   // null
  Json(std::nullptr_t) {}                                                                             // NOLINT
  Json(bool b) : kind_(Kind::kBool), bool_(b) {}                                                      // NOLINT
  Json(int v) : Json(static_cast<int64_t>(v)) {}                                                      // NOLINT
  Json(int64_t v) : kind_(Kind::kNumber), is_int_(true), int_(v), double_(static_cast<double>(v)) {}  // NOLINT
  Json(uint64_t v);  // NOLINT: exact when <= INT64_MAX, else a double
  Json(double v);    // NOLINT: also int-exact when integral and in int64 range
  Json(std::string s) : kind_(Kind::kString), string_(std::move(s)) {}  // NOLINT
  Json(const char* s) : Json(std::string(s)) {}                         // NOLINT
  Json(Array a) : kind_(Kind::kArray), array_(std::move(a)) {}          // NOLINT
  static Json array() { return Json(Array{}); }
  static Json object();

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::kNull; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_number() const { return kind_ == Kind::kNumber; }
  bool is_int() const { return kind_ == Kind::kNumber && is_int_; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }

  // Unchecked accessors: the caller has tested the kind (RN_ENFORCE otherwise).
  bool as_bool() const;
  double as_double() const;
  int64_t as_int() const;
  const std::string& as_string() const;
  const Array& items() const;
  const Object& members() const;
  // Number of array items or object members; 0 for scalars.
  size_t size() const;

  // Building. push_back needs an array; set needs an object and replaces an
  // existing key in place (keeping its position).
  Json& push_back(Json value);
  Json& set(std::string key, Json value);
  // Direct child lookup; nullptr when absent or not an object.
  const Json* find(std::string_view key) const;

  // Path lookup: keys separated by '.', array indices as [N]: "stages[0].peers[1]".
  // Errors (kNotFound / kInvalidArgument) name the path and the missing part.
  Result<const Json*> get(std::string_view path) const;
  bool has(std::string_view path) const { return get(path).ok(); }
  Result<bool> get_bool(std::string_view path) const;
  Result<int64_t> get_int(std::string_view path) const;
  Result<double> get_double(std::string_view path) const;
  Result<std::string> get_string(std::string_view path) const;
  Result<const Array*> get_array(std::string_view path) const;
  Result<const Json*> get_object(std::string_view path) const;
  // Optional keys: the fallback when absent (or null); an error when present with the wrong type.
  Result<bool> get_bool_or(std::string_view path, bool fallback) const;
  Result<int64_t> get_int_or(std::string_view path, int64_t fallback) const;
  Result<double> get_double_or(std::string_view path, double fallback) const;
  Result<std::string> get_string_or(std::string_view path, std::string fallback) const;

  // indent > 0: pretty, `indent` spaces per level; indent <= 0: one line, no spaces.
  // Non-finite doubles (not representable in JSON) print as null.
  std::string dump(int indent = 2) const;

  // Structural equality; numbers compare by value, objects by ordered members.
  bool operator==(const Json& other) const;

  // "string \"abc\"", "number 2.5", "object" — how errors describe a found value.
  std::string describe() const;

 private:
  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  bool is_int_ = false;
  int64_t int_ = 0;
  double double_ = 0;
  std::string string_;
  Array array_;
  Object object_;
};

const char* json_kind_name(Json::Kind kind);

// Errors are kInvalidArgument: "line 3, column 14: expected ',' or '}' after an object member, found 'x'".
Result<Json> parse_json(std::string_view text);
// Reads and parses a file; errors start with the path ("bundle/manifest.json:3:14: ...").
Result<Json> read_json_file(const std::string& path);

}  // namespace ravnest
