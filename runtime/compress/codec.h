// Codecs for float32 tensors on the wire, and error feedback for the lossy ones.
//
// Guarantees:
//  * encode() writes the payload format below; decode() accepts exactly that format
//    for a tensor of n elements and nothing else: every length, index and scale is
//    checked before it is used, and a bad payload is a kCorrupt error naming the codec
//    and what is wrong, never an out-of-bounds access.
//  * check_encoded_size() is the one length rule: the frame header (before allocation)
//    and decode() both use it.
//  * Lossless: raw. Lossy: fp16 and bf16 (exact on values they represent, round to
//    nearest even otherwise, so within half an ulp of the target format), int8 (error
//    at most scale/2 per element), top-k (drops all but the k largest |x|).
//  * ErrorFeedback keeps, per stream, what the codec lost and adds it to the next
//    tensor of that stream, so the sum of decoded tensors tracks the sum of inputs.
//
// Payload formats (little-endian), for n float32 elements:
//   raw   n * 4 bytes: the floats.
//   fp16  n * 2 bytes: IEEE binary16.
//   bf16  n * 2 bytes: the upper 16 bits of the float, rounded to nearest even.
//   int8  ceil(n / 256) float32 scales, then n int8 values q in [-127, 127]; element i
//         is q[i] * scale[i / 256]; scale = max |x| / 127 of its chunk of 256.
//   topk  k pairs (uint32 index, float32 value), indices strictly ascending and < n,
//         k = ceil(fraction * n) (at least 1 when n > 0); every other element is 0.
// The codec numbers are the `codec` byte of wire frames (docs/wire-protocol.md).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace ravnest::rt {

enum class Codec : uint8_t { kRaw = 0, kF16 = 1, kBF16 = 2, kInt8 = 3, kTopK = 4 };

inline constexpr int64_t kInt8ChunkElems = 256;

struct CodecParams {
  double topk_fraction = 0.01;  // top-k: fraction of the elements kept, in (0, 1]
  bool operator==(const CodecParams&) const = default;
};

// A codec with its parameters, as configured: "none", "fp16", "bf16", "int8", "topk:0.05".
struct CodecSpec {
  Codec codec = Codec::kRaw;
  CodecParams params;
  bool operator==(const CodecSpec&) const = default;
};

const char* codec_name(Codec codec);  // "raw", "fp16", "bf16", "int8", "topk"
bool is_known_codec(uint8_t code);
// Every codec but raw loses information on some inputs.
bool is_lossy(Codec codec);

// Parses "none" | "fp16" | "bf16" | "int8" | "topk:FRACTION" with 0 < FRACTION <= 1.
Result<CodecSpec> parse_codec_spec(std::string_view text);
// The inverse of parse_codec_spec ("none" for raw).
std::string codec_spec_str(const CodecSpec& spec);

// The number of elements top-k keeps of n.
int64_t topk_count(int64_t n, double fraction);
// Whether `bytes` is a possible encoded size of n elements under `codec` (exact for
// every codec but top-k, whose size is a multiple of 8 up to 8 * n). Errors name the
// codec, n and the expected size.
Status check_encoded_size(Codec codec, int64_t n, uint64_t bytes);

// Encodes n floats. Errors: int8 and top-k refuse non-finite values (naming the index);
// a top-k fraction outside (0, 1].
Result<std::vector<uint8_t>> encode(Codec codec, const float* x, int64_t n, const CodecParams& params = {});
// Decodes `bytes` into out[0..n). Errors (kCorrupt) name the codec and what is wrong.
Status decode(Codec codec, std::span<const uint8_t> bytes, float* out, int64_t n);

// Which stream a residual belongs to: peer, frame kind, tensor id.
struct StreamKey {
  std::string peer;
  uint16_t kind = 0;
  uint32_t tensor_id = 0;
  auto operator<=>(const StreamKey&) const = default;
};

// Error feedback: x' = x + residual; send C(x'); residual = x' - D(C(x')).
// A stream whose length changes (e.g. a smaller last batch) restarts from a zero
// residual. Thread-safe.
class ErrorFeedback {
 public:
  Result<std::vector<uint8_t>> encode(const StreamKey& key, Codec codec, const float* x, int64_t n,
                                      const CodecParams& params = {});
  // max |residual| of the stream; 0 for an unknown stream.
  float max_abs_residual(const StreamKey& key) const;
  void clear();

 private:
  mutable std::mutex mu_;
  std::map<StreamKey, std::vector<float>> residual_;
};

}  // namespace ravnest::rt
