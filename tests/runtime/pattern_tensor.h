// pattern(): a tensor whose bytes follow a xorshift sequence of `seed`, for transport tests that
// must tell frames apart byte for byte.
#pragma once

#include <cstdint>
#include <utility>

#include "runtime/tensor.h"

namespace ravnest::testing {

inline rt::Tensor pattern(DType dtype, Shape shape, uint32_t seed) {
  rt::Tensor t = rt::Tensor::empty(dtype, std::move(shape));
  auto* b = static_cast<uint8_t*>(t.raw());
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < t.bytes(); ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b[i] = static_cast<uint8_t>(x);
  }
  return t;
}

}  // namespace ravnest::testing
