#include "common/dtype.h"

#include <limits>
#include <sstream>

namespace ravnest {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: case DType::kI32: return 4;
    case DType::kU8: case DType::kI8: case DType::kBool: return 1;
    case DType::kI64: case DType::kF64: return 8;
    case DType::kF16: case DType::kBF16: return 2;
    case DType::kUndefined: return 0;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "float32";
    case DType::kU8: return "uint8";
    case DType::kI8: return "int8";
    case DType::kI32: return "int32";
    case DType::kI64: return "int64";
    case DType::kBool: return "bool";
    case DType::kF16: return "float16";
    case DType::kF64: return "float64";
    case DType::kBF16: return "bfloat16";
    case DType::kUndefined: return "undefined";
  }
  return "invalid";
}

Result<DType> dtype_from_onnx(int32_t code) {
  switch (code) {
    case 1: case 2: case 3: case 6: case 7: case 9: case 10: case 11: case 16:
      return static_cast<DType>(code);
    default:
      return error(Code::kUnsupported, "element type code ", code,
                   " is not supported (supported: float32, float64, float16, bfloat16, int64, int32, int8, uint8, bool)");
  }
}

bool mul_overflows(int64_t a, int64_t b, int64_t* out) { return __builtin_mul_overflow(a, b, out); }
bool add_overflows(int64_t a, int64_t b, int64_t* out) { return __builtin_add_overflow(a, b, out); }

Result<int64_t> checked_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return error(Code::kInvalidArgument, "shape ", shape_str(shape), " has a negative dimension");
    if (mul_overflows(n, d, &n)) return error(Code::kInvalidArgument, "shape ", shape_str(shape), " overflows int64");
  }
  return n;
}

int64_t numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const Shape& shape) {
  if (shape.empty()) return "scalar";
  std::ostringstream out;
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? "x" : "") << shape[i];
  return out.str();
}

Result<Shape> parse_shape(const std::string& text) {
  Shape shape;
  std::string token;
  auto flush = [&]() -> Status {
    if (token.empty()) return error(Code::kInvalidArgument, "shape '", text, "' has an empty dimension");
    for (char c : token)
      if (c < '0' || c > '9') return error(Code::kInvalidArgument, "shape '", text, "': '", token, "' is not a number");
    if (token.size() > 15) return error(Code::kInvalidArgument, "shape '", text, "': '", token, "' is too large");
    shape.push_back(std::stoll(token));
    token.clear();
    return ok_status();
  };
  for (char c : text) {
    if (c == 'x' || c == ',') {
      RN_RETURN_IF_ERROR(flush());
    } else {
      token += c;
    }
  }
  RN_RETURN_IF_ERROR(flush());
  return shape;
}

}  // namespace ravnest
