// Wire frames: a fixed 112-byte little-endian header followed by a payload, raw or
// encoded by a codec (runtime/compress/codec.h).
//
// Guarantees: decode_header accepts a header only if its magic, protocol version,
// header checksum, kind, dtype, codec, rank, dims and payload length are all valid:
// for codec 0 (raw) the payload length equals numel * dtype size; for any other codec
// the dtype is float32 and the length is a valid encoded size of numel elements
// (check_encoded_size). Both the payload and the decoded tensor (numel * dtype size)
// are within the limits, so a receiver may allocate either after decode_header succeeds. Errors (kCorrupt,
// or kUnsupported for another protocol version) name the field and its value.
// The byte layout is documented in docs/wire-protocol.md.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "common/dtype.h"
#include "common/status.h"
#include "runtime/compress/codec.h"

namespace ravnest::rt {

// "RVNF" as bytes on the wire (0x52 0x56 0x4E 0x46), read as a little-endian u32.
inline constexpr uint32_t kFrameMagic = 0x464E5652;
inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 112;
inline constexpr size_t kFrameMaxRank = 8;

enum class FrameKind : uint16_t {
  kHello = 1,       // handshake: node id, run id (payload: JSON, see docs/wire-protocol.md)
  kActivation = 2,  // forward boundary activation
  kGradient = 3,    // backward boundary gradient
  kLabels = 4,      // targets sent to the last stage
  kControl = 5,     // small control messages (payload: bytes)
  kBye = 6,         // orderly close: the sender will send nothing more
  kHeartbeat = 7,   // liveness, empty payload
  kCollective = 8,  // all-reduce chunks
};
const char* frame_kind_name(FrameKind kind);
bool is_known_frame_kind(uint16_t kind);

struct FrameHeader {
  uint16_t version = kProtocolVersion;
  FrameKind kind = FrameKind::kControl;
  uint64_t step = 0;
  uint32_t microbatch = 0;
  uint32_t tensor_id = 0;
  DType dtype = DType::kU8;
  Codec codec = Codec::kRaw;  // dtype and shape are the decoded tensor's
  Shape shape;  // rank <= 8
  uint64_t payload_bytes = 0;  // as sent: the encoded size when codec != raw
  uint32_t payload_crc = 0;  // CRC-32C of the payload

  // "ACTIVATION step 3 microbatch 1 tensor 0" — how errors name a frame.
  std::string describe() const;
};

struct FrameLimits {
  uint64_t max_payload_bytes = uint64_t{1} << 30;  // 1 GiB
};

// Fills a header for `kind` carrying a tensor of `dtype` and `shape`, payload checksum left 0.
// Errors if rank > 8 or the dtype is not a wire dtype.
Result<FrameHeader> make_header(FrameKind kind, uint64_t step, uint32_t microbatch, uint32_t tensor_id, DType dtype,
                                const Shape& shape);

// Writes the 112 header bytes, including the header's own CRC-32C. The header must be valid.
std::array<uint8_t, kFrameHeaderBytes> encode_header(const FrameHeader& header);
// Validates everything decodable from the header alone (see the file comment).
Result<FrameHeader> decode_header(std::span<const uint8_t> bytes, const FrameLimits& limits);

}  // namespace ravnest::rt
