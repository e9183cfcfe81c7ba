// Reading an ONNX model file for import without passing its weights through protobuf.
//
// Guarantees of read_model_for_import(): the ModelProto it returns converts (with
// graph_from_proto, base_dir = the file's folder) to the same Graph as the one
// read_model_proto returns, bit for bit. The difference is the cost: every large
// float initializer held inline (raw_data of at least kOutOfPlaceMinBytes bytes in
// the main graph) is described as ONNX external data pointing into the model file
// itself (location = the file's name, offset, length), so protobuf parses only the
// small rest and each weight is read once, straight into its tensor. Other
// initializers, subgraphs and files whose wire format it does not follow are left
// to protobuf as they are; any failure falls back to read_model_proto (so errors
// are its errors).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace onnx {
class ModelProto;
}  // namespace onnx

namespace ravnest::fe {

// Inline weights from this size on are read out of place. Shape data (int64
// initializers read by Reshape, Slice, ...) is never float and far smaller.
constexpr uint64_t kOutOfPlaceMinBytes = 64 * 1024;

Result<onnx::ModelProto> read_model_for_import(const std::string& path);

}  // namespace ravnest::fe
