// JSON value, recursive-descent parser with depth bound, and printer (see json.h).
#include "common/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

namespace ravnest {
namespace {

// 2^63 as a double: integral doubles in [-2^63, 2^63) convert to int64 exactly.
constexpr double kTwoPow63 = 9223372036854775808.0;

bool double_fits_int64(double v) {
  return std::isfinite(v) && v == std::trunc(v) && v >= -kTwoPow63 && v < kTwoPow63;
}

// ---------------------------------------------------------------- parser

struct ParseError {
  size_t line = 0;
  size_t column = 0;
  std::string message;
};

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  // Returns false and fills error() on failure.
  bool parse_document(Json* out) {
    skip_ws();
    if (!parse_value(out, 0)) return false;
    skip_ws();
    if (pos_ != text_.size()) return fail("expected the end of the document after the top-level value");
    return true;
  }
  const ParseError& error() const { return error_; }

 private:
  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }

  std::string found() const {
    if (at_end()) return "the end of the input";
    unsigned char c = static_cast<unsigned char>(peek());
    if (c < 0x20 || c >= 0x7f) {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "byte 0x%02x", c);
      return buf;
    }
    return std::string("'") + static_cast<char>(c) + "'";
  }

  // Records "expected <what>, found <next char>" at the current position.
  bool fail(const std::string& what) { return fail_at(pos_, what + ", found " + found()); }
  bool fail_at(size_t pos, std::string message) {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < pos && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    error_ = ParseError{line, column, std::move(message)};
    return false;
  }

  void skip_ws() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++pos_;
  }

  bool consume_literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool parse_value(Json* out, int depth) {
    if (at_end()) return fail("expected a value");
    switch (peek()) {
      case '{': return parse_object(out, depth + 1);
      case '[': return parse_array(out, depth + 1);
      case '"': {
        std::string s;
        if (!parse_string(&s)) return false;
        *out = Json(std::move(s));
        return true;
      }
      case 't':
        if (consume_literal("true")) {
          *out = Json(true);
          return true;
        }
        break;
      case 'f':
        if (consume_literal("false")) {
          *out = Json(false);
          return true;
        }
        break;
      case 'n':
        if (consume_literal("null")) {
          *out = Json();
          return true;
        }
        break;
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return parse_number(out);
    }
    return fail("expected a value (object, array, string, number, true, false or null)");
  }

  bool check_depth(int depth) {
    if (depth > kMaxJsonDepth) {
      return fail_at(pos_, "nesting deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    }
    return true;
  }

  bool parse_object(Json* out, int depth) {
    if (!check_depth(depth)) return false;
    ++pos_;  // '{'
    Json obj = Json::object();
    skip_ws();
    if (!at_end() && peek() == '}') {
      ++pos_;
      *out = std::move(obj);
      return true;
    }
    while (true) {
      skip_ws();
      if (at_end() || peek() != '"') return fail("expected a string key in an object");
      size_t key_pos = pos_;
      std::string key;
      if (!parse_string(&key)) return false;
      if (obj.find(key) != nullptr) return fail_at(key_pos, "duplicate object key \"" + key + "\"");
      skip_ws();
      if (at_end() || peek() != ':') return fail("expected ':' after object key \"" + key + "\"");
      ++pos_;
      skip_ws();
      Json value;
      if (!parse_value(&value, depth)) return false;
      obj.set(std::move(key), std::move(value));
      skip_ws();
      if (!at_end() && peek() == ',') {
        ++pos_;
        continue;
      }
      if (!at_end() && peek() == '}') {
        ++pos_;
        *out = std::move(obj);
        return true;
      }
      return fail("expected ',' or '}' after an object member");
    }
  }

  bool parse_array(Json* out, int depth) {
    if (!check_depth(depth)) return false;
    ++pos_;  // '['
    Json arr = Json::array();
    skip_ws();
    if (!at_end() && peek() == ']') {
      ++pos_;
      *out = std::move(arr);
      return true;
    }
    while (true) {
      skip_ws();
      Json value;
      if (!parse_value(&value, depth)) return false;
      arr.push_back(std::move(value));
      skip_ws();
      if (!at_end() && peek() == ',') {
        ++pos_;
        continue;
      }
      if (!at_end() && peek() == ']') {
        ++pos_;
        *out = std::move(arr);
        return true;
      }
      return fail("expected ',' or ']' after an array item");
    }
  }

  bool parse_hex4(uint32_t* out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      if (at_end()) return fail("expected 4 hex digits after \\u");
      char c = peek();
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<uint32_t>(c - 'A' + 10);
      else
        return fail("expected 4 hex digits after \\u");
      ++pos_;
    }
    *out = v;
    return true;
  }

  static void append_utf8(uint32_t cp, std::string* s) {
    if (cp < 0x80) {
      s->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  bool parse_string(std::string* out) {
    ++pos_;  // opening quote
    std::string s;
    while (true) {
      if (at_end()) return fail("expected '\"' to close the string");
      char c = peek();
      if (c == '"') {
        ++pos_;
        *out = std::move(s);
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20)
        return fail("expected an escaped control character in a string (\\n, \\t, \\u00XX)");
      if (c != '\\') {
        s.push_back(c);
        ++pos_;
        continue;
      }
      ++pos_;
      if (at_end()) return fail("expected an escape character after '\\'");
      char e = peek();
      ++pos_;
      switch (e) {
        case '"': s.push_back('"'); break;
        case '\\': s.push_back('\\'); break;
        case '/': s.push_back('/'); break;
        case 'b': s.push_back('\b'); break;
        case 'f': s.push_back('\f'); break;
        case 'n': s.push_back('\n'); break;
        case 'r': s.push_back('\r'); break;
        case 't': s.push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!parse_hex4(&cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate must be followed by \u and a low surrogate.
            uint32_t low = 0;
            if (!consume_literal("\\u")) return fail("expected a \\u low surrogate after a high surrogate");
            if (!parse_hex4(&low)) return false;
            if (low < 0xDC00 || low > 0xDFFF) return fail_at(pos_ - 6, "expected a low surrogate (\\uDC00-\\uDFFF)");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return fail_at(pos_ - 6, "unpaired low surrogate \\u" + std::string(text_.substr(pos_ - 4, 4)));
          }
          append_utf8(cp, &s);
          break;
        }
        default: --pos_; return fail("expected one of \" \\ / b f n r t u after '\\'");
      }
    }
  }

  bool parse_number(Json* out) {
    size_t start = pos_;
    bool integral = true;
    if (peek() == '-') ++pos_;
    if (at_end() || !(peek() >= '0' && peek() <= '9')) return fail("expected a digit in a number");
    if (peek() == '0') {
      ++pos_;
    } else {
      while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (!at_end() && peek() == '.') {
      integral = false;
      ++pos_;
      if (at_end() || !(peek() >= '0' && peek() <= '9')) return fail("expected a digit after '.' in a number");
      while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      integral = false;
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      if (at_end() || !(peek() >= '0' && peek() <= '9')) return fail("expected a digit in a number's exponent");
      while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (integral) {
      int64_t iv = 0;
      auto [ptr, ec] = std::from_chars(first, last, iv);
      if (ec == std::errc() && ptr == last) {
        *out = Json(iv);
        return true;
      }
      // Out of int64 range: keep it as a double.
    }
    double dv = 0;
    auto [ptr, ec] = std::from_chars(first, last, dv);
    if (ec == std::errc::result_out_of_range || (ec == std::errc() && !std::isfinite(dv))) {
      return fail_at(start, "number '" + std::string(first, last) + "' is out of the range of a double");
    }
    if (ec != std::errc() || ptr != last)
      return fail_at(start, "number '" + std::string(first, last) + "' cannot be read");
    *out = Json(dv);
    return true;
  }

  std::string_view text_;
  size_t pos_ = 0;
  ParseError error_;
};

// ---------------------------------------------------------------- printer

void dump_string(const std::string& s, std::string* out) {
  out->push_back('"');
  for (char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned char>(c));
          *out += buf;
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

void dump_double(double v, std::string* out) {
  if (!std::isfinite(v)) {
    *out += "null";
    return;
  }
  char buf[32];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round-trip form
  std::string_view text(buf, static_cast<size_t>(ptr - buf));
  *out += text;
}

void dump_value(const Json& v, int indent, int level, std::string* out) {
  auto newline = [&](int lvl) {
    if (indent <= 0) return;
    out->push_back('\n');
    out->append(static_cast<size_t>(indent) * static_cast<size_t>(lvl), ' ');
  };
  switch (v.kind()) {
    case Json::Kind::kNull: *out += "null"; return;
    case Json::Kind::kBool: *out += v.as_bool() ? "true" : "false"; return;
    case Json::Kind::kNumber:
      if (v.is_int()) {
        *out += std::to_string(v.as_int());
      } else {
        dump_double(v.as_double(), out);
      }
      return;
    case Json::Kind::kString: dump_string(v.as_string(), out); return;
    case Json::Kind::kArray: {
      if (v.items().empty()) {
        *out += "[]";
        return;
      }
      out->push_back('[');
      bool first = true;
      for (const Json& item : v.items()) {
        if (!first) out->push_back(',');
        first = false;
        newline(level + 1);
        dump_value(item, indent, level + 1, out);
      }
      newline(level);
      out->push_back(']');
      return;
    }
    case Json::Kind::kObject: {
      if (v.members().empty()) {
        *out += "{}";
        return;
      }
      out->push_back('{');
      bool first = true;
      for (const auto& [key, item] : v.members()) {
        if (!first) out->push_back(',');
        first = false;
        newline(level + 1);
        dump_string(key, out);
        *out += indent > 0 ? ": " : ":";
        dump_value(item, indent, level + 1, out);
      }
      newline(level);
      out->push_back('}');
      return;
    }
  }
}

// ---------------------------------------------------------------- paths

// Splits "a.b[2].c" into steps: a key (index < 0) or an array index.
struct PathStep {
  std::string key;
  int64_t index = -1;
};

Result<std::vector<PathStep>> split_path(std::string_view path) {
  std::vector<PathStep> steps;
  size_t i = 0;
  auto bad = [&](const char* why) { return error(Code::kInvalidArgument, "bad key path '", path, "': ", why); };
  while (i < path.size()) {
    if (path[i] == '[') {
      size_t close = path.find(']', i);
      if (close == std::string_view::npos) return bad("'[' without ']'");
      std::string_view digits = path.substr(i + 1, close - i - 1);
      int64_t index = 0;
      auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
      if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size() || index < 0) {
        return bad("array index is not a non-negative integer");
      }
      steps.push_back(PathStep{"", index});
      i = close + 1;
      if (i < path.size() && path[i] == '.') ++i;
      continue;
    }
    size_t end = path.find_first_of(".[", i);
    if (end == std::string_view::npos) end = path.size();
    if (end == i) return bad("empty key");
    steps.push_back(PathStep{std::string(path.substr(i, end - i)), -1});
    i = end;
    if (i < path.size() && path[i] == '.') {
      ++i;
      if (i == path.size()) return bad("ends with '.'");
    }
  }
  return steps;
}

Status wrong_type(std::string_view path, const char* expected, const Json& found) {
  return error(Code::kInvalidArgument, "key '", path, "': expected ", expected, ", found ", found.describe());
}

}  // namespace

// ---------------------------------------------------------------- Json

Json::Json(uint64_t v) {
  kind_ = Kind::kNumber;
  if (v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    is_int_ = true;
    int_ = static_cast<int64_t>(v);
  }
  double_ = static_cast<double>(v);
}

Json::Json(double v) : kind_(Kind::kNumber), double_(v) {
  if (double_fits_int64(v)) {
    is_int_ = true;
    int_ = static_cast<int64_t>(v);
  }
}

Json Json::object() {
  Json j;
  j.kind_ = Kind::kObject;
  return j;
}

bool Json::as_bool() const {
  RN_ENFORCE(is_bool(), "Json::as_bool on ", describe());
  return bool_;
}
double Json::as_double() const {
  RN_ENFORCE(is_number(), "Json::as_double on ", describe());
  return double_;
}
int64_t Json::as_int() const {
  RN_ENFORCE(is_int(), "Json::as_int on ", describe());
  return int_;
}
const std::string& Json::as_string() const {
  RN_ENFORCE(is_string(), "Json::as_string on ", describe());
  return string_;
}
const Json::Array& Json::items() const {
  RN_ENFORCE(is_array(), "Json::items on ", describe());
  return array_;
}
const Json::Object& Json::members() const {
  RN_ENFORCE(is_object(), "Json::members on ", describe());
  return object_;
}
size_t Json::size() const {
  if (is_array()) return array_.size();
  if (is_object()) return object_.size();
  return 0;
}

Json& Json::push_back(Json value) {
  RN_ENFORCE(is_array(), "Json::push_back on ", describe());
  array_.push_back(std::move(value));
  return array_.back();
}

Json& Json::set(std::string key, Json value) {
  RN_ENFORCE(is_object(), "Json::set on ", describe());
  for (auto& [k, v] : object_) {
    if (k == key) {
      v = std::move(value);
      return v;
    }
  }
  object_.emplace_back(std::move(key), std::move(value));
  return object_.back().second;
}

const Json* Json::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : object_) {
    if (k == key) return &v;
  }
  return nullptr;
}

Result<const Json*> Json::get(std::string_view path) const {
  RN_ASSIGN_OR_RETURN(std::vector<PathStep> steps, split_path(path));
  const Json* cur = this;
  std::string walked;  // the part of `path` resolved so far, for error messages
  for (const PathStep& step : steps) {
    std::string here = walked.empty() ? "the document" : "'" + walked + "'";
    if (step.index >= 0) {
      if (!cur->is_array()) {
        return error(Code::kInvalidArgument, "key '", path, "': ", here, " is ", cur->describe(), ", not an array");
      }
      if (static_cast<uint64_t>(step.index) >= cur->array_.size()) {
        return error(Code::kNotFound, "key '", path, "': index ", step.index, " is out of range; ", here, " has ",
                     cur->array_.size(), " items");
      }
      cur = &cur->array_[static_cast<size_t>(step.index)];
      walked += "[" + std::to_string(step.index) + "]";
    } else {
      if (!cur->is_object()) {
        return error(Code::kInvalidArgument, "key '", path, "': ", here, " is ", cur->describe(), ", not an object");
      }
      const Json* next = cur->find(step.key);
      if (next == nullptr) {
        std::string keys;
        for (const auto& [k, v] : cur->object_) keys += (keys.empty() ? "" : ", ") + k;
        return error(Code::kNotFound, "missing key '", path, "' (", here, " has ",
                     keys.empty() ? std::string("no keys") : "keys: " + keys, ")");
      }
      cur = next;
      walked += (walked.empty() ? "" : ".") + step.key;
    }
  }
  return cur;
}

Result<bool> Json::get_bool(std::string_view path) const {
  RN_ASSIGN_OR_RETURN(const Json* v, get(path));
  if (!v->is_bool()) return wrong_type(path, "true or false", *v);
  return v->bool_;
}

Result<int64_t> Json::get_int(std::string_view path) const {
  RN_ASSIGN_OR_RETURN(const Json* v, get(path));
  if (!v->is_int()) return wrong_type(path, "an integer", *v);
  return v->int_;
}

Result<double> Json::get_double(std::string_view path) const {
  RN_ASSIGN_OR_RETURN(const Json* v, get(path));
  if (!v->is_number()) return wrong_type(path, "a number", *v);
  return v->double_;
}

Result<std::string> Json::get_string(std::string_view path) const {
  RN_ASSIGN_OR_RETURN(const Json* v, get(path));
  if (!v->is_string()) return wrong_type(path, "a string", *v);
  return v->string_;
}

Result<const Json::Array*> Json::get_array(std::string_view path) const {
  RN_ASSIGN_OR_RETURN(const Json* v, get(path));
  if (!v->is_array()) return wrong_type(path, "an array", *v);
  return &v->array_;
}

Result<const Json*> Json::get_object(std::string_view path) const {
  RN_ASSIGN_OR_RETURN(const Json* v, get(path));
  if (!v->is_object()) return wrong_type(path, "an object", *v);
  return v;
}

namespace {
// Shared by the get_*_or family: absent or null -> fallback; otherwise the strict getter.
template <typename T, typename Getter>
Result<T> get_or(const Json& json, std::string_view path, T fallback, Getter getter) {
  Result<const Json*> v = json.get(path);
  if (!v.ok()) {
    if (v.status().code() == Code::kNotFound) return fallback;
    return v.status();
  }
  if ((*v)->is_null()) return fallback;
  return getter();
}
}  // namespace

Result<bool> Json::get_bool_or(std::string_view path, bool fallback) const {
  return get_or<bool>(*this, path, fallback, [&] { return get_bool(path); });
}
Result<int64_t> Json::get_int_or(std::string_view path, int64_t fallback) const {
  return get_or<int64_t>(*this, path, fallback, [&] { return get_int(path); });
}
Result<double> Json::get_double_or(std::string_view path, double fallback) const {
  return get_or<double>(*this, path, fallback, [&] { return get_double(path); });
}
Result<std::string> Json::get_string_or(std::string_view path, std::string fallback) const {
  return get_or<std::string>(*this, path, std::move(fallback), [&] { return get_string(path); });
}

std::string Json::dump(int indent) const {
  std::string out;
  dump_value(*this, indent, 0, &out);
  return out;
}

bool Json::operator==(const Json& other) const {
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kNull: return true;
    case Kind::kBool: return bool_ == other.bool_;
    case Kind::kNumber:
      if (is_int_ && other.is_int_) return int_ == other.int_;
      return double_ == other.double_;
    case Kind::kString: return string_ == other.string_;
    case Kind::kArray: return array_ == other.array_;
    case Kind::kObject: return object_ == other.object_;
  }
  return false;
}

std::string Json::describe() const {
  switch (kind_) {
    case Kind::kNull: return "null";
    case Kind::kBool: return bool_ ? "true" : "false";
    case Kind::kNumber: return "number " + dump(0);
    case Kind::kString: {
      std::string shown = string_.size() > 40 ? string_.substr(0, 40) + "..." : string_;
      std::string out = "string ";
      dump_string(shown, &out);
      return out;
    }
    case Kind::kArray: return "an array of " + std::to_string(array_.size()) + " items";
    case Kind::kObject: return "an object";
  }
  return "?";
}

const char* json_kind_name(Json::Kind kind) {
  switch (kind) {
    case Json::Kind::kNull: return "null";
    case Json::Kind::kBool: return "bool";
    case Json::Kind::kNumber: return "number";
    case Json::Kind::kString: return "string";
    case Json::Kind::kArray: return "array";
    case Json::Kind::kObject: return "object";
  }
  return "?";
}

Result<Json> parse_json(std::string_view text) {
  Parser parser(text);
  Json out;
  if (!parser.parse_document(&out)) {
    const ParseError& e = parser.error();
    return error(Code::kInvalidArgument, "line ", e.line, ", column ", e.column, ": ", e.message);
  }
  return out;
}

Result<Json> read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return error(Code::kNotFound, "cannot open JSON file '", path, "': ", std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return error(Code::kInvalidArgument, "cannot read JSON file '", path, "': ", std::strerror(errno));
  std::string text = buf.str();
  Parser parser(text);
  Json out;
  if (!parser.parse_document(&out)) {
    const ParseError& e = parser.error();
    return error(Code::kInvalidArgument, path, ":", e.line, ":", e.column, ": ", e.message);
  }
  return out;
}

}  // namespace ravnest
