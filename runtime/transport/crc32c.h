// CRC-32C (Castagnoli, polynomial 0x1EDC6F41 reflected), the checksum of wire frames.
//
// Guarantees: crc32c("123456789") == 0xE3069283 (the standard check value).
// Uses the SSE4.2 crc32 instruction when the CPU has it (several GB/s, so
// checksumming a 64 MiB activation costs a few milliseconds), else slicing-by-8.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ravnest::rt {

// Extends `crc` (0 to start) over `data`: crc32c(b, crc32c(a)) == crc32c(a ++ b).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace ravnest::rt
