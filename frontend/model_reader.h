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
//
// read_model_mapped() is the same read that also keeps the file mapped: the bytes
// of every weight it moved are views into that read-only mapping (WeightViews),
// valid while any copy of `WeightViews::file` lives. Nothing is copied or
// zero-filled for them; the file must not be changed or truncated meanwhile.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
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

// A whole file mapped read-only (private); unmapped when the last owner lets go.
class MappedFile {
 public:
  // An error names the file when it cannot be opened or mapped (or is empty or not a regular file).
  // `populate`: map every page now (MAP_POPULATE), for a caller that will read most of the file; the
  // kernel then faults nothing in later (a write() from unmapped pages retries page by page).
  static Result<std::shared_ptr<const MappedFile>> map(const std::string& path, bool populate);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedFile(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  const uint8_t* data_;
  size_t size_;
};

// Bytes of weights left in a mapped model file: initializer name -> its raw data inside `file`.
struct WeightViews {
  std::shared_ptr<const MappedFile> file;  // null when nothing is viewed
  std::map<std::string, std::span<const uint8_t>> bytes;
};

// read_model_for_import that also fills `weights` (cleared first) with the weights it made external data of the
// file itself, by name, and keeps the file mapped for them; `weights` stays empty where it fell back to
// read_model_proto. A name several initializers share is not in `weights` (it keeps its external-data read).
Result<onnx::ModelProto> read_model_mapped(const std::string& path, WeightViews* weights);

}  // namespace ravnest::fe
