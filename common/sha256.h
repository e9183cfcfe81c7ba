// SHA-256 (FIPS 180-4) for bundle digests and checkpoint integrity.
//
// Guarantees: results equal the FIPS 180-4 reference (tested with its vectors);
// sha256_file streams the file in fixed-size chunks, so memory use does not grow
// with the file size. Hex output is 64 lowercase characters.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ravnest {

// Incremental hasher: update() any number of times, then finish() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  std::array<uint8_t, 32> finish();
  std::string finish_hex();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view bytes);
// Errors name the file (kNotFound when it cannot be opened, kInvalidArgument on a read error).
Result<std::string> sha256_file(const std::string& path);

}  // namespace ravnest
