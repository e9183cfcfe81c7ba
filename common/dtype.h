// Element types and shapes shared by the compiler and the runtime.
//
// Invariant: DType values equal ONNX TensorProto.DataType codes, so a dtype read
// from an ONNX file or a wire frame converts by a checked cast (dtype_from_onnx).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace ravnest {

enum class DType : int32_t {
  kUndefined = 0,
  kF32 = 1,
  kU8 = 2,
  kI8 = 3,
  kI32 = 6,
  kI64 = 7,
  kBool = 9,
  kF16 = 10,
  kF64 = 11,
  kBF16 = 16,
};

// Size in bytes of one element; 0 for kUndefined.
size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
// Accepts only the codes above; anything else is kUnsupported naming the code.
Result<DType> dtype_from_onnx(int32_t code);

using Shape = std::vector<int64_t>;

// Product of dims, checked: negative dims or overflow give an error.
Result<int64_t> checked_numel(const Shape& shape);
// Unchecked product, for shapes already validated.
int64_t numel(const Shape& shape);
// "64x1x28x28"; a scalar prints as "scalar".
std::string shape_str(const Shape& shape);
// Parses "64x1x28x28" (also "64,1,28,28").
Result<Shape> parse_shape(const std::string& text);

// a * b and a + b for sizes from files or the network.
bool mul_overflows(int64_t a, int64_t b, int64_t* out);
bool add_overflows(int64_t a, int64_t b, int64_t* out);

}  // namespace ravnest
