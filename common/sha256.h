// SHA-256 (FIPS 180-4) for bundle digests and checkpoint integrity.
//
// Guarantees: results equal the FIPS 180-4 reference (tested with its vectors);
// sha256_file streams the file in fixed-size windows (8 MiB, mapped read-only where
// the file is regular, else read), so memory use does not grow with the file size.
// Hex output is 64 lowercase characters. On x86-64 CPUs with the SHA extensions
// (cpuid: sha, ssse3, sse4.1) blocks are compressed with them, chosen at run time;
// every other CPU uses the portable C++ code. Both give the same digests (tested
// against each other and the NIST vectors).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ravnest {

// Which block compression a hasher uses. kAuto: the SHA extensions where the CPU
// has them, else portable; kShaExtensions where the CPU lacks them is portable too.
enum class Sha256Impl { kAuto, kPortable, kShaExtensions };

// True when this CPU can run the SHA-extensions compression.
bool sha256_cpu_has_sha_extensions();

// Incremental hasher: update() any number of times, then finish() once.
class Sha256 {
 public:
  explicit Sha256(Sha256Impl impl = Sha256Impl::kAuto);
  void update(const void* data, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  std::array<uint8_t, 32> finish();
  std::string finish_hex();

 private:
  using CompressFn = void (*)(uint32_t* state, const uint8_t* blocks, size_t count);

  CompressFn compress_;  // compresses `count` whole 64-byte blocks into state
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view bytes);
// Errors name the file (kNotFound when it cannot be opened, kInvalidArgument on a read error).
Result<std::string> sha256_file(const std::string& path);

}  // namespace ravnest
