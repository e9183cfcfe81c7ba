// CRC-32C (Castagnoli, polynomial 0x1EDC6F41 reflected), the checksum of wire frames.
//
// Guarantees: crc32c("123456789") == 0xE3069283 (the standard check value).
// Picks the fastest path the CPU has: carry-less multiplication on 512-bit registers
// (AVX-512 + VPCLMULQDQ, tens of GB/s), the SSE4.2 crc32 instruction (about 8 bytes a cycle),
// else slicing-by-8.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ravnest::rt {

// Extends `crc` (0 to start) over `data`: crc32c(b, crc32c(a)) == crc32c(a ++ b).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

// The implementations behind crc32c, for tests and benchmarks: every available path gives
// crc32c's value. crc32c_on falls back to the next slower path the CPU has.
enum class Crc32cPath { kPortable, kSse42, kAvx512Clmul };
bool crc32c_path_available(Crc32cPath path);
uint32_t crc32c_on(Crc32cPath path, const void* data, size_t size, uint32_t crc = 0);

}  // namespace ravnest::rt
