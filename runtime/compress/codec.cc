// Float32 wire codecs and error feedback (see codec.h for the payload formats).
#include "runtime/compress/codec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "common/dtype.h"

namespace ravnest::rt {
namespace {

static_assert(std::endian::native == std::endian::little, "the codec formats assume a little-endian host");

constexpr uint64_t kTopKPairBytes = 8;  // uint32 index + float32 value

uint16_t f32_to_f16(float f) {
  // Round to nearest even, after F. Giesen's float_to_half_fast3_rtne.
  uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  uint16_t out;
  if (x >= 0x47800000u) {  // >= 65536, inf or nan: inf, or a quiet nan
    out = x > 0x7f800000u ? 0x7e00 : 0x7c00;
  } else if (x < 0x38800000u) {  // below 2^-14: subnormal half; the FPU rounds when adding 0.5
    const float magic = 0.5f;
    float v = std::bit_cast<float>(x) + magic;
    out = static_cast<uint16_t>(std::bit_cast<uint32_t>(v) - std::bit_cast<uint32_t>(magic));
  } else {
    const uint32_t mant_odd = (x >> 13) & 1u;
    x += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + mant_odd;  // rebias, round (overflow gives inf)
    out = static_cast<uint16_t>(x >> 13);
  }
  return static_cast<uint16_t>(out | sign);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    float v = static_cast<float>(mant) * 0x1p-24f;  // exact
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_bf16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float bf16_to_f32(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

int64_t int8_chunks(int64_t n) {
  return (n + kInt8ChunkElems - 1) / kInt8ChunkElems;
}

template <typename T>
void put(std::vector<uint8_t>& out, size_t offset, T v) {
  std::memcpy(out.data() + offset, &v, sizeof(T));
}
template <typename T>
T get(std::span<const uint8_t> in, size_t offset) {
  T v;
  std::memcpy(&v, in.data() + offset, sizeof(T));
  return v;
}

Status non_finite(Codec codec, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      return error(Code::kInvalidArgument, "codec ", codec_name(codec), " cannot encode the non-finite value ", x[i],
                   " at index ", i, " (training diverged? use fp16/bf16 or none to carry inf/nan)");
    }
  }
  return ok_status();
}

std::vector<uint8_t> encode_halves(const float* x, int64_t n, uint16_t (*convert)(float)) {
  std::vector<uint8_t> out(static_cast<size_t>(n) * 2);
  for (int64_t i = 0; i < n; ++i) put<uint16_t>(out, static_cast<size_t>(i) * 2, convert(x[i]));
  return out;
}

void decode_halves(std::span<const uint8_t> in, float* out, int64_t n, float (*convert)(uint16_t)) {
  for (int64_t i = 0; i < n; ++i) out[i] = convert(get<uint16_t>(in, static_cast<size_t>(i) * 2));
}

std::vector<uint8_t> encode_int8(const float* x, int64_t n) {
  const int64_t chunks = int8_chunks(n);
  const size_t scales_bytes = static_cast<size_t>(chunks) * 4;
  std::vector<uint8_t> out(scales_bytes + static_cast<size_t>(n));
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kInt8ChunkElems, end = std::min(n, begin + kInt8ChunkElems);
    float max_abs = 0;
    for (int64_t i = begin; i < end; ++i) max_abs = std::max(max_abs, std::abs(x[i]));
    const float scale = max_abs / 127.0f;
    put<float>(out, static_cast<size_t>(c) * 4, scale);
    for (int64_t i = begin; i < end; ++i) {
      float q = scale > 0 ? std::nearbyint(x[i] / scale) : 0.0f;
      q = std::clamp(q, -127.0f, 127.0f);
      out[scales_bytes + static_cast<size_t>(i)] = static_cast<uint8_t>(static_cast<int8_t>(q));
    }
  }
  return out;
}

Status decode_int8(std::span<const uint8_t> in, float* out, int64_t n) {
  const int64_t chunks = int8_chunks(n);
  const size_t scales_bytes = static_cast<size_t>(chunks) * 4;
  for (int64_t c = 0; c < chunks; ++c) {
    const float scale = get<float>(in, static_cast<size_t>(c) * 4);
    if (!std::isfinite(scale) || scale < 0) {
      return error(Code::kCorrupt, "int8 payload: scale of chunk ", c, " is ", scale, ", expected finite and >= 0");
    }
    const int64_t begin = c * kInt8ChunkElems, end = std::min(n, begin + kInt8ChunkElems);
    for (int64_t i = begin; i < end; ++i) {
      const auto q = static_cast<int8_t>(in[scales_bytes + static_cast<size_t>(i)]);
      if (q == -128) return error(Code::kCorrupt, "int8 payload: value -128 at index ", i, ", expected -127..127");
      out[i] = static_cast<float>(q) * scale;
    }
  }
  return ok_status();
}

std::vector<uint8_t> encode_topk(const float* x, int64_t n, double fraction) {
  const int64_t k = topk_count(n, fraction);
  std::vector<uint32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0u);
  // Larger |x| first; equal magnitudes by lower index, so the choice is deterministic.
  auto larger = [x](uint32_t a, uint32_t b) {
    const float fa = std::abs(x[a]), fb = std::abs(x[b]);
    return fa != fb ? fa > fb : a < b;
  };
  std::nth_element(idx.begin(), idx.begin() + k, idx.end(), larger);
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  std::vector<uint8_t> out(static_cast<size_t>(k) * kTopKPairBytes);
  for (size_t j = 0; j < idx.size(); ++j) {
    put<uint32_t>(out, j * kTopKPairBytes, idx[j]);
    put<float>(out, j * kTopKPairBytes + 4, x[idx[j]]);
  }
  return out;
}

Status decode_topk(std::span<const uint8_t> in, float* out, int64_t n) {
  std::fill(out, out + n, 0.0f);
  const size_t k = in.size() / kTopKPairBytes;
  int64_t previous = -1;
  for (size_t j = 0; j < k; ++j) {
    const int64_t index = get<uint32_t>(in, j * kTopKPairBytes);
    if (index >= n || index <= previous) {
      return error(Code::kCorrupt, "topk payload: index ", index, " of pair ", j, " is ",
                   index >= n ? "out of range for " + std::to_string(n) + " elements"
                              : "not above the previous index " + std::to_string(previous));
    }
    out[index] = get<float>(in, j * kTopKPairBytes + 4);
    previous = index;
  }
  return ok_status();
}

Status check_params(Codec codec, const CodecParams& params) {
  if (codec == Codec::kTopK && !(params.topk_fraction > 0 && params.topk_fraction <= 1)) {
    return error(Code::kInvalidArgument, "topk fraction ", params.topk_fraction, " is outside (0, 1]");
  }
  return ok_status();
}

}  // namespace

const char* codec_name(Codec codec) {
  switch (codec) {
    case Codec::kRaw: return "raw";
    case Codec::kF16: return "fp16";
    case Codec::kBF16: return "bf16";
    case Codec::kInt8: return "int8";
    case Codec::kTopK: return "topk";
  }
  return "unknown";
}

bool is_known_codec(uint8_t code) {
  return code <= static_cast<uint8_t>(Codec::kTopK);
}

bool is_lossy(Codec codec) {
  return codec != Codec::kRaw;
}

Result<CodecSpec> parse_codec_spec(std::string_view text) {
  CodecSpec spec;
  if (text == "none" || text == "raw") return spec;
  for (Codec c : {Codec::kF16, Codec::kBF16, Codec::kInt8}) {
    if (text == codec_name(c)) {
      spec.codec = c;
      return spec;
    }
  }
  if (text.starts_with("topk:")) {
    std::string number(text.substr(5));
    char* end = nullptr;
    double fraction = number.empty() ? 0.0 : std::strtod(number.c_str(), &end);
    if (!number.empty() && end && *end == '\0' && fraction > 0 && fraction <= 1) {
      spec.codec = Codec::kTopK;
      spec.params.topk_fraction = fraction;
      return spec;
    }
    return error(Code::kInvalidArgument, "codec '", text, "': topk needs a fraction in (0, 1], e.g. topk:0.05");
  }
  return error(Code::kInvalidArgument, "unknown codec '", text, "'; expected none, fp16, bf16, int8 or topk:FRACTION");
}

std::string codec_spec_str(const CodecSpec& spec) {
  if (spec.codec == Codec::kRaw) return "none";
  if (spec.codec == Codec::kTopK) return str_cat("topk:", spec.params.topk_fraction);
  return codec_name(spec.codec);
}

int64_t topk_count(int64_t n, double fraction) {
  if (n <= 0) return 0;
  const double k = std::ceil(fraction * static_cast<double>(n));
  return std::clamp<int64_t>(static_cast<int64_t>(k), 1, n);
}

Status check_encoded_size(Codec codec, int64_t n, uint64_t bytes) {
  if (n < 0) return error(Code::kCorrupt, codec_name(codec), " payload for a negative element count ", n);
  int64_t expected = 0;
  bool overflow = false;
  switch (codec) {
    case Codec::kRaw: overflow = mul_overflows(n, 4, &expected); break;
    case Codec::kF16:
    case Codec::kBF16: overflow = mul_overflows(n, 2, &expected); break;
    case Codec::kInt8: overflow = add_overflows(n, int8_chunks(n) * 4, &expected); break;
    case Codec::kTopK: {
      int64_t bound = 0;
      if (mul_overflows(n, static_cast<int64_t>(kTopKPairBytes), &bound))
        return error(Code::kCorrupt, "topk payload for ", n, " elements: size overflows");
      if (bytes % kTopKPairBytes != 0 || bytes > static_cast<uint64_t>(bound)) {
        return error(Code::kCorrupt, "topk payload of ", bytes, " bytes for ", n,
                     " elements: expected a multiple of 8 bytes up to ", bound);
      }
      return ok_status();
    }
    default: return error(Code::kCorrupt, "unknown codec ", static_cast<int>(codec));
  }
  if (overflow) return error(Code::kCorrupt, codec_name(codec), " payload for ", n, " elements: size overflows");
  if (bytes != static_cast<uint64_t>(expected)) {
    return error(Code::kCorrupt, codec_name(codec), " payload of ", bytes, " bytes for ", n, " elements: expected ",
                 expected, " bytes");
  }
  return ok_status();
}

Result<std::vector<uint8_t>> encode(Codec codec, const float* x, int64_t n, const CodecParams& params) {
  RN_RETURN_IF_ERROR(check_params(codec, params));
  if (n < 0) return error(Code::kInvalidArgument, "codec ", codec_name(codec), ": negative element count ", n);
  switch (codec) {
    case Codec::kRaw: {
      std::vector<uint8_t> out(static_cast<size_t>(n) * 4);
      if (n) std::memcpy(out.data(), x, out.size());
      return out;
    }
    case Codec::kF16: return encode_halves(x, n, f32_to_f16);
    case Codec::kBF16: return encode_halves(x, n, f32_to_bf16);
    case Codec::kInt8: RN_RETURN_IF_ERROR(non_finite(codec, x, n)); return encode_int8(x, n);
    case Codec::kTopK:
      RN_RETURN_IF_ERROR(non_finite(codec, x, n));
      if (n > int64_t{UINT32_MAX}) return error(Code::kInvalidArgument, "topk: ", n, " elements exceed uint32 indices");
      return encode_topk(x, n, params.topk_fraction);
  }
  return error(Code::kInvalidArgument, "unknown codec ", static_cast<int>(codec));
}

Status decode(Codec codec, std::span<const uint8_t> bytes, float* out, int64_t n) {
  RN_RETURN_IF_ERROR(check_encoded_size(codec, n, bytes.size()));
  switch (codec) {
    case Codec::kRaw:
      if (n) std::memcpy(out, bytes.data(), bytes.size());
      return ok_status();
    case Codec::kF16: decode_halves(bytes, out, n, f16_to_f32); return ok_status();
    case Codec::kBF16: decode_halves(bytes, out, n, bf16_to_f32); return ok_status();
    case Codec::kInt8: return decode_int8(bytes, out, n);
    case Codec::kTopK: return decode_topk(bytes, out, n);
  }
  return error(Code::kCorrupt, "unknown codec ", static_cast<int>(codec));
}

Result<std::vector<uint8_t>> ErrorFeedback::encode(const StreamKey& key, Codec codec, const float* x, int64_t n,
                                                   const CodecParams& params) {
  if (!is_lossy(codec)) return rt::encode(codec, x, n, params);
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<float>& residual = residual_[key];
  if (residual.size() != static_cast<size_t>(n)) residual.assign(static_cast<size_t>(n), 0.0f);
  // x' = x + residual, kept in `residual` until the decoded value is subtracted.
  for (int64_t i = 0; i < n; ++i) residual[static_cast<size_t>(i)] += x[i];
  Result<std::vector<uint8_t>> bytes = rt::encode(codec, residual.data(), n, params);
  if (!bytes.ok()) {
    residual_.erase(key);
    return bytes.status();
  }
  std::vector<float> decoded(static_cast<size_t>(n));
  Status st = decode(codec, *bytes, decoded.data(), n);
  RN_ENFORCE(st.ok(), "decoding our own ", codec_name(codec), " payload failed: ", st.to_string());
  for (size_t i = 0; i < decoded.size(); ++i) residual[i] -= decoded[i];
  return bytes;
}

float ErrorFeedback::max_abs_residual(const StreamKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = residual_.find(key);
  float m = 0;
  if (it != residual_.end())
    for (float r : it->second) m = std::max(m, std::abs(r));
  return m;
}

void ErrorFeedback::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  residual_.clear();
}

}  // namespace ravnest::rt
