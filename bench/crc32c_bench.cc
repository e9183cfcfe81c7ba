// CRC-32C throughput of every path this CPU has (runtime/transport/crc32c.h), at sizes of a
// socket read (64 KiB), a ring chunk (1 MiB, in cache) and a whole buffer (64 MiB, from memory).
// Prints, per path and size, the fastest and the median of 15 timed runs in GB/s (1e9 bytes).
//
//   ravnest-crc32c-bench
//
// Not a test: nothing is asserted beyond every path giving the same checksum.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "runtime/transport/crc32c.h"

int main() {
  using ravnest::rt::Crc32cPath;
  using Clock = std::chrono::steady_clock;
  std::vector<uint8_t> bytes(size_t{64} << 20);
  uint32_t x = 1;
  for (uint8_t& b : bytes) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  const struct {
    Crc32cPath path;
    const char* name;
  } paths[] = {{Crc32cPath::kPortable, "slicing-by-8"},
               {Crc32cPath::kSse42, "crc32 instruction, 3 chains"},
               {Crc32cPath::kAvx512Clmul, "AVX-512 carry-less folding"}};
  std::printf("| path | size | fastest GB/s | median GB/s |\n|---|---|---|---|\n");
  for (size_t size : {size_t{64} << 10, size_t{1} << 20, size_t{64} << 20}) {
    uint32_t reference = ravnest::rt::crc32c(bytes.data(), size);
    for (const auto& p : paths) {
      if (!ravnest::rt::crc32c_path_available(p.path)) continue;
      // Enough repetitions for ~64 MiB per timed run, so cache-sized inputs stay in cache.
      const size_t reps = std::max<size_t>(1, (size_t{64} << 20) / size);
      std::vector<double> rates;
      for (int run = 0; run < 15; ++run) {
        const auto start = Clock::now();
        for (size_t r = 0; r < reps; ++r) {
          if (ravnest::rt::crc32c_on(p.path, bytes.data(), size) != reference) {
            std::fprintf(stderr, "path '%s' gives another checksum at %zu bytes\n", p.name, size);
            return 1;
          }
        }
        rates.push_back(static_cast<double>(size * reps) / std::chrono::duration<double>(Clock::now() - start).count() /
                        1e9);
      }
      std::sort(rates.begin(), rates.end());
      std::printf("| %s | %zu KiB | %.1f | %.1f |\n", p.name, size >> 10, rates.back(), rates[rates.size() / 2]);
    }
  }
  return 0;
}
