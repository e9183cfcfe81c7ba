// Frame header encoding and validation (see frame.h and docs/wire-protocol.md).
#include "runtime/transport/frame.h"

#include <bit>
#include <cstring>
#include <sstream>

#include "runtime/transport/crc32c.h"

namespace ravnest::rt {
namespace {

static_assert(std::endian::native == std::endian::little, "the wire format code assumes a little-endian host");

// Byte offsets of the header fields.
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffKind = 6;
constexpr size_t kOffStep = 8;
constexpr size_t kOffMicrobatch = 16;
constexpr size_t kOffTensorId = 20;
constexpr size_t kOffDtype = 24;
constexpr size_t kOffCodec = 28;
constexpr size_t kOffRank = 29;
constexpr size_t kOffReserved = 30;
constexpr size_t kOffDims = 32;
constexpr size_t kOffPayloadBytes = 96;
constexpr size_t kOffPayloadCrc = 104;
constexpr size_t kOffHeaderCrc = 108;
static_assert(kOffHeaderCrc + 4 == kFrameHeaderBytes);
static_assert(kOffDims + 8 * kFrameMaxRank == kOffPayloadBytes);

template <typename T>
void put(uint8_t* bytes, size_t offset, T value) {
  std::memcpy(bytes + offset, &value, sizeof(T));
}
template <typename T>
T get(const uint8_t* bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes + offset, sizeof(T));
  return value;
}

Status bad_field(const char* field, const auto& value, const auto&... why) {
  return error(Code::kCorrupt, "bad frame header: field '", field, "' is ", value, why...);
}

std::string hex32(uint32_t v) {
  std::ostringstream out;
  out << "0x" << std::hex << v;
  return out.str();
}

}  // namespace

const char* frame_kind_name(FrameKind kind) {
  switch (kind) {
    case FrameKind::kHello: return "HELLO";
    case FrameKind::kActivation: return "ACTIVATION";
    case FrameKind::kGradient: return "GRADIENT";
    case FrameKind::kLabels: return "LABELS";
    case FrameKind::kControl: return "CONTROL";
    case FrameKind::kBye: return "BYE";
    case FrameKind::kHeartbeat: return "HEARTBEAT";
    case FrameKind::kCollective: return "COLLECTIVE";
  }
  return "UNKNOWN";
}

bool is_known_frame_kind(uint16_t kind) {
  return kind >= static_cast<uint16_t>(FrameKind::kHello) && kind <= static_cast<uint16_t>(FrameKind::kCollective);
}

std::string FrameHeader::describe() const {
  std::ostringstream out;
  out << frame_kind_name(kind) << " step " << step << " microbatch " << microbatch << " tensor " << tensor_id;
  return out.str();
}

Result<FrameHeader> make_header(FrameKind kind, uint64_t step, uint32_t microbatch, uint32_t tensor_id, DType dtype,
                                const Shape& shape) {
  FrameHeader h;
  h.kind = kind;
  h.step = step;
  h.microbatch = microbatch;
  h.tensor_id = tensor_id;
  h.dtype = dtype;
  h.shape = shape;
  if (!dtype_from_onnx(static_cast<int32_t>(dtype)).ok()) {
    return error(Code::kInvalidArgument, "cannot send ", h.describe(), ": dtype ", dtype_name(dtype),
                 " has no wire encoding");
  }
  if (shape.size() > kFrameMaxRank) {
    return error(Code::kInvalidArgument, "cannot send ", h.describe(), ": rank ", shape.size(),
                 " exceeds the wire limit of ", kFrameMaxRank);
  }
  RN_ASSIGN_OR_RETURN(int64_t count, checked_numel(shape));
  int64_t bytes = 0;
  if (mul_overflows(count, static_cast<int64_t>(dtype_size(dtype)), &bytes)) {
    return error(Code::kInvalidArgument, "cannot send ", h.describe(), ": shape ", shape_str(shape), " is too large");
  }
  h.payload_bytes = static_cast<uint64_t>(bytes);
  return h;
}

std::array<uint8_t, kFrameHeaderBytes> encode_header(const FrameHeader& h) {
  RN_ENFORCE(h.shape.size() <= kFrameMaxRank, "encode_header: rank ", h.shape.size());
  std::array<uint8_t, kFrameHeaderBytes> out{};
  uint8_t* b = out.data();
  put<uint32_t>(b, kOffMagic, kFrameMagic);
  put<uint16_t>(b, kOffVersion, h.version);
  put<uint16_t>(b, kOffKind, static_cast<uint16_t>(h.kind));
  put<uint64_t>(b, kOffStep, h.step);
  put<uint32_t>(b, kOffMicrobatch, h.microbatch);
  put<uint32_t>(b, kOffTensorId, h.tensor_id);
  put<int32_t>(b, kOffDtype, static_cast<int32_t>(h.dtype));
  put<uint8_t>(b, kOffCodec, static_cast<uint8_t>(h.codec));
  put<uint8_t>(b, kOffRank, static_cast<uint8_t>(h.shape.size()));
  put<uint16_t>(b, kOffReserved, 0);
  for (size_t i = 0; i < h.shape.size(); ++i) put<int64_t>(b, kOffDims + 8 * i, h.shape[i]);
  put<uint64_t>(b, kOffPayloadBytes, h.payload_bytes);
  put<uint32_t>(b, kOffPayloadCrc, h.payload_crc);
  put<uint32_t>(b, kOffHeaderCrc, crc32c(b, kOffHeaderCrc));
  return out;
}

Result<FrameHeader> decode_header(std::span<const uint8_t> bytes, const FrameLimits& limits) {
  if (bytes.size() != kFrameHeaderBytes) {
    return error(Code::kInternal, "decode_header given ", bytes.size(), " bytes, expected ", kFrameHeaderBytes);
  }
  const uint8_t* b = bytes.data();
  // Magic and version first: they say whether the rest can be read at all.
  uint32_t magic = get<uint32_t>(b, kOffMagic);
  if (magic != kFrameMagic) {
    return bad_field("magic", hex32(magic), ", expected ", hex32(kFrameMagic), " (\"RVNF\"); the sender is not a ",
                     "Ravnest transport or the stream lost its framing");
  }
  FrameHeader h;
  h.version = get<uint16_t>(b, kOffVersion);
  if (h.version != kProtocolVersion) {
    return error(Code::kUnsupported, "bad frame header: field 'version' is ", h.version, ", this build speaks wire ",
                 "protocol version ", kProtocolVersion, "; run the same Ravnest release on every node");
  }
  uint32_t header_crc = get<uint32_t>(b, kOffHeaderCrc);
  uint32_t computed = crc32c(b, kOffHeaderCrc);
  if (header_crc != computed) {
    return bad_field("header_crc", hex32(header_crc), ", but the header bytes checksum to ", hex32(computed),
                     " (corrupted in transit)");
  }
  uint16_t reserved = get<uint16_t>(b, kOffReserved);
  if (reserved != 0) return bad_field("reserved", reserved, ", expected 0");
  uint16_t kind = get<uint16_t>(b, kOffKind);
  if (!is_known_frame_kind(kind)) return bad_field("kind", kind, ", not a known frame kind");
  h.kind = static_cast<FrameKind>(kind);
  h.step = get<uint64_t>(b, kOffStep);
  h.microbatch = get<uint32_t>(b, kOffMicrobatch);
  h.tensor_id = get<uint32_t>(b, kOffTensorId);
  int32_t dtype = get<int32_t>(b, kOffDtype);
  Result<DType> dt = dtype_from_onnx(dtype);
  if (!dt.ok()) return bad_field("dtype", dtype, ", not a supported ONNX element type");
  h.dtype = *dt;
  uint8_t codec = get<uint8_t>(b, kOffCodec);
  if (!is_known_codec(codec)) return bad_field("codec", int{codec}, ", not a known codec (0..4)");
  h.codec = static_cast<Codec>(codec);
  if (h.codec != Codec::kRaw && h.dtype != DType::kF32) {
    return bad_field("codec", int{codec}, " (", codec_name(h.codec), "), but dtype ", dtype_name(h.dtype), " is not float32");
  }
  uint8_t rank = get<uint8_t>(b, kOffRank);
  if (rank > kFrameMaxRank) return bad_field("rank", int{rank}, ", at most ", kFrameMaxRank);
  h.shape.resize(rank);
  for (size_t i = 0; i < kFrameMaxRank; ++i) {
    int64_t d = get<int64_t>(b, kOffDims + 8 * i);
    if (i < rank && d < 0) return bad_field("dims", d, " at index ", i, ", dims must be >= 0");
    if (i >= rank && d != 0)
      return bad_field("dims", d, " at index ", i, ", unused dims (rank ", int{rank}, ") must be 0");
    if (i < rank) h.shape[i] = d;
  }
  h.payload_bytes = get<uint64_t>(b, kOffPayloadBytes);
  h.payload_crc = get<uint32_t>(b, kOffPayloadCrc);
  Result<int64_t> count = checked_numel(h.shape);
  int64_t expected = 0;
  if (!count.ok() || mul_overflows(*count, static_cast<int64_t>(dtype_size(h.dtype)), &expected)) {
    return bad_field("dims", shape_str(h.shape), ", whose byte size overflows int64");
  }
  if (h.codec == Codec::kRaw && static_cast<uint64_t>(expected) != h.payload_bytes) {
    return bad_field("payload_bytes", h.payload_bytes, ", but shape ", shape_str(h.shape), " of ", dtype_name(h.dtype),
                     " needs ", expected, " bytes");
  }
  if (h.codec != Codec::kRaw) {
    Status size = check_encoded_size(h.codec, *count, h.payload_bytes);
    if (!size.ok()) return bad_field("payload_bytes", h.payload_bytes, " for shape ", shape_str(h.shape), ": ", size.message());
    if (static_cast<uint64_t>(expected) > limits.max_payload_bytes) {
      return bad_field("dims", shape_str(h.shape), ", whose decoded size of ", expected, " bytes is above the limit of ",
                       limits.max_payload_bytes, " bytes (raise FrameLimits::max_payload_bytes if this tensor is expected)");
    }
  }
  if (h.payload_bytes > limits.max_payload_bytes) {
    return bad_field("payload_bytes", h.payload_bytes, ", above the limit of ", limits.max_payload_bytes,
                     " bytes (raise FrameLimits::max_payload_bytes if this tensor is expected)");
  }
  return h;
}

}  // namespace ravnest::rt
