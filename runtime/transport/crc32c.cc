// CRC-32C with three paths that give the same value for every input
// (tests/runtime/transport_test.cc): carry-less multiplication folding 256 bytes at a time
// (x86 AVX-512 + VPCLMULQDQ), the SSE4.2 crc32 instruction in three interleaved chains, and
// portable slicing-by-8.
#include "runtime/transport/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
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

// x^n mod P, reflected; x^(8n) is the operator that appends n zero bytes to a CRC state.
constexpr uint32_t x_power(uint64_t n) {
  uint32_t result = uint32_t{1} << 31;  // x^0
  uint32_t power = uint32_t{1} << 30;   // x^1
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
    const uint32_t op = x_power(8 * kBlock);
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

// Folding. A 16-byte block D loaded into a 128-bit lane holds the message's first 8 bytes
// (the higher-degree half H, reflected) in its low qword and the next 8 (L) in its high qword.
// Moving D F bytes further along the message multiplies it by x^(8F): D x^(8F) = H x^(8F+64) +
// L x^(8F) = H k_h x^33 + L k_l x^33 (mod P) with k_h = x^(8F+31), k_l = x^(8F-33). A carry-less
// product of a reflected qword and a reflected 32-bit constant lands, bit for bit, where a
// 16-byte block F bytes later keeps those coefficients, so the fold is clmul(H, k_h) ^
// clmul(L, k_l) XORed into that block. At the end the one lane left is run through the crc32
// instruction like 16 bytes of message; an incoming state is XORed into the first 4 bytes.
struct FoldConstants {
  uint64_t k_h, k_l;
};
constexpr FoldConstants fold_by(uint64_t bytes) { return {x_power(8 * bytes + 31), x_power(8 * bytes - 33)}; }
constexpr FoldConstants kBy256 = fold_by(256), kBy64 = fold_by(64), kBy48 = fold_by(48), kBy32 = fold_by(32),
                        kBy16 = fold_by(16);

__attribute__((target("avx512f,vpclmulqdq"))) inline __m512i fold_constants_x4(FoldConstants a, FoldConstants b,
                                                                                FoldConstants c, FoldConstants d) {
  return _mm512_set_epi64(static_cast<int64_t>(d.k_l), static_cast<int64_t>(d.k_h), static_cast<int64_t>(c.k_l),
                          static_cast<int64_t>(c.k_h), static_cast<int64_t>(b.k_l), static_cast<int64_t>(b.k_h),
                          static_cast<int64_t>(a.k_l), static_cast<int64_t>(a.k_h));
}

// Folds every lane of `x` by its lane's constants and XORs in `next`.
__attribute__((target("avx512f,vpclmulqdq"))) inline __m512i fold(__m512i x, __m512i k, __m512i next) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), next,
                                   0x96);
}

constexpr size_t kFoldMin = 1024;  // shorter inputs take the crc32-instruction path

__attribute__((target("avx512f,vpclmulqdq,sse4.2"))) uint32_t crc32c_avx512(const uint8_t* p, size_t n,
                                                                              uint32_t crc) {
  if (n < kFoldMin) return crc32c_sse42(p, n, crc);
  const __m512i by256 = fold_constants_x4(kBy256, kBy256, kBy256, kBy256);
  const __m512i by64 = fold_constants_x4(kBy64, kBy64, kBy64, kBy64);
  const __m512i state = _mm512_castsi128_si512(_mm_cvtsi32_si128(static_cast<int>(crc)));
  __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(p), state);
  __m512i x1 = _mm512_loadu_si512(p + 64);
  __m512i x2 = _mm512_loadu_si512(p + 128);
  __m512i x3 = _mm512_loadu_si512(p + 192);
  p += 256;
  n -= 256;
  for (; n >= 256; p += 256, n -= 256) {
    x0 = fold(x0, by256, _mm512_loadu_si512(p));
    x1 = fold(x1, by256, _mm512_loadu_si512(p + 64));
    x2 = fold(x2, by256, _mm512_loadu_si512(p + 128));
    x3 = fold(x3, by256, _mm512_loadu_si512(p + 192));
  }
  __m512i x = fold(x0, by64, x1);
  x = fold(x, by64, x2);
  x = fold(x, by64, x3);
  for (; n >= 64; p += 64, n -= 64) x = fold(x, by64, _mm512_loadu_si512(p));
  // Lanes 0-2 move to lane 3's place (48, 32 and 16 bytes on); lane 3 stays.
  const __m512i to_last = fold_constants_x4(kBy48, kBy32, kBy16, FoldConstants{0, 0});
  const __m512i lane3 = _mm512_maskz_mov_epi64(0xC0, x);
  x = fold(x, to_last, lane3);
  // The four lanes XORed into one (lane 3's place), through memory: once per call.
  alignas(64) uint64_t q[8];
  _mm512_store_si512(q, x);
  uint64_t c = _mm_crc32_u64(0, q[0] ^ q[2] ^ q[4] ^ q[6]);
  c = _mm_crc32_u64(c, q[1] ^ q[3] ^ q[5] ^ q[7]);
  return crc32c_sse42(p, n, static_cast<uint32_t>(c));
}

bool have_sse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}

bool have_avx512_clmul() {
  static const bool has = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("vpclmulqdq");
  return has;
}
#endif

}  // namespace

bool crc32c_path_available(Crc32cPath path) {
  switch (path) {
    case Crc32cPath::kPortable:
      return true;
#if defined(__x86_64__)
    case Crc32cPath::kSse42:
      return have_sse42();
    case Crc32cPath::kAvx512Clmul:
      return have_avx512_clmul();
#endif
    default:
      return false;
  }
}

uint32_t crc32c_on(Crc32cPath path, const void* data, size_t size, uint32_t crc) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
#if defined(__x86_64__)
  if (path == Crc32cPath::kAvx512Clmul && have_avx512_clmul()) return ~crc32c_avx512(p, size, crc);
  if (path != Crc32cPath::kPortable && have_sse42()) return ~crc32c_sse42(p, size, crc);
#endif
  return ~crc32c_portable(p, size, crc);
}

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
#if defined(__x86_64__)
  if (have_avx512_clmul()) return crc32c_on(Crc32cPath::kAvx512Clmul, data, size, crc);
  if (have_sse42()) return crc32c_on(Crc32cPath::kSse42, data, size, crc);
#endif
  return crc32c_on(Crc32cPath::kPortable, data, size, crc);
}

}  // namespace ravnest::rt
