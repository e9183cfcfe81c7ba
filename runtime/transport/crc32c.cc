// CRC-32C with a hardware path (x86 SSE4.2, three interleaved chains) and a portable
// slicing-by-8 path; both give the same value for every input (tests/runtime/transport_test.cc).
#include "runtime/transport/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace ravnest::rt {
namespace {

constexpr uint32_t kPolyReflected = 0x82F63B78;

struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t;
  constexpr Tables() : t() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPolyReflected : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
};
constexpr Tables kTables;

uint32_t crc32c_portable(const uint8_t* p, size_t n, uint32_t crc) {
  const auto& t = kTables.t;
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);  // little-endian host assumed (checked in frame.cc)
    word ^= crc;
    crc = t[7][word & 0xFF] ^ t[6][(word >> 8) & 0xFF] ^ t[5][(word >> 16) & 0xFF] ^ t[4][(word >> 24) & 0xFF] ^
          t[3][(word >> 32) & 0xFF] ^ t[2][(word >> 40) & 0xFF] ^ t[1][(word >> 48) & 0xFF] ^ t[0][word >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
  return crc;
}

// Multiplies a and b modulo the polynomial, both in the reflected representation
// (bit 31 is the coefficient of x^0). The CRC state update is linear, so appending
// n zero bytes to a state multiplies it by x^(8n); see crc32c_sse42.
constexpr uint32_t mult_mod_poly(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (int i = 0; i < 32; ++i) {
    if (a & (uint32_t{1} << (31 - i))) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kPolyReflected : b >> 1;
  }
  return product;
}

// x^(8n) mod P: the operator that appends n zero bytes to a CRC state.
constexpr uint32_t zeros_operator(uint64_t n) {
  uint32_t result = uint32_t{1} << 31;  // x^0
  uint32_t power = uint32_t{1} << 23;   // x^8
  for (; n; n >>= 1) {
    if (n & 1) result = mult_mod_poly(power, result);
    power = mult_mod_poly(power, power);
  }
  return result;
}

// Appending kBlock zero bytes to a state, byte-sliced: shift(c) = XOR_k t[k][byte k of c].
template <size_t kBlock>
struct ZerosTable {
  std::array<std::array<uint32_t, 256>, 4> t;
  constexpr ZerosTable() : t() {
    const uint32_t op = zeros_operator(kBlock);
    for (uint32_t k = 0; k < 4; ++k) {
      for (uint32_t v = 0; v < 256; ++v) t[k][v] = mult_mod_poly(op, v << (8 * k));
    }
  }
  uint32_t shift(uint32_t c) const {
    return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
  }
};

#if defined(__x86_64__)
// The crc32 instruction has a latency of 3 cycles and a throughput of 1 per cycle, so one
// dependency chain runs at a third of its speed. Three blocks of kBlock bytes are checksummed
// as independent chains and joined: state(A ++ B ++ C) = shift(shift(a) ^ b) ^ c, where a
// starts from the incoming state, b and c from 0, and shift appends kBlock zero bytes.
template <size_t kBlock>
__attribute__((target("sse4.2"))) uint64_t crc32c_sse42_3way(const uint8_t*& p, size_t& n, uint64_t c,
                                                             const ZerosTable<kBlock>& zeros) {
  while (n >= 3 * kBlock) {
    uint64_t c1 = 0, c2 = 0;
    for (size_t i = 0; i < kBlock; i += 8) {
      uint64_t w0, w1, w2;
      std::memcpy(&w0, p + i, 8);
      std::memcpy(&w1, p + kBlock + i, 8);
      std::memcpy(&w2, p + 2 * kBlock + i, 8);
      c = _mm_crc32_u64(c, w0);
      c1 = _mm_crc32_u64(c1, w1);
      c2 = _mm_crc32_u64(c2, w2);
    }
    c = zeros.shift(zeros.shift(static_cast<uint32_t>(c)) ^ static_cast<uint32_t>(c1)) ^ static_cast<uint32_t>(c2);
    p += 3 * kBlock;
    n -= 3 * kBlock;
  }
  return c;
}

constexpr size_t kLongBlock = 8192;
constexpr size_t kShortBlock = 256;
constexpr ZerosTable<kLongBlock> kLongZeros;
constexpr ZerosTable<kShortBlock> kShortZeros;

__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const uint8_t* p, size_t n, uint32_t crc) {
  uint64_t c = crc;
  c = crc32c_sse42_3way(p, n, c, kLongZeros);
  c = crc32c_sse42_3way(p, n, c, kShortZeros);
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

bool have_sse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
#if defined(__x86_64__)
  if (have_sse42()) return ~crc32c_sse42(p, size, crc);
#endif
  return ~crc32c_portable(p, size, crc);
}

}  // namespace ravnest::rt
