// read_model_for_import / read_model_mapped: one mapping of the file, a rewrite of
// its protobuf wire format that turns large inline weights into external-data
// references to the file itself, then a protobuf parse of what is left (see
// model_reader.h). read_model_mapped keeps the mapping for the moved weights.
#include "frontend/model_reader.h"

#include <fcntl.h>
#include <onnx/onnx_pb.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string_view>

#include "common/onnx_graph.h"

namespace ravnest::fe {
namespace {

// Field numbers of onnx.proto (ModelProto.graph, GraphProto.initializer, TensorProto.*).
constexpr uint32_t kModelGraph = 7;
constexpr uint32_t kGraphInitializer = 5;
constexpr uint32_t kTensorDataType = 2;
constexpr uint32_t kTensorName = 8;
constexpr uint32_t kTensorRawData = 9;
constexpr uint32_t kTensorExternalData = 13;
constexpr uint32_t kTensorDataLocation = 14;
constexpr uint64_t kFloatType = 1;     // TensorProto.FLOAT
constexpr uint64_t kLocationExternal = 1;  // TensorProto.EXTERNAL
constexpr uint32_t kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

bool read_varint(const uint8_t*& p, const uint8_t* end, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && p < end; shift += 7) {
    const uint8_t byte = *p++;
    *value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return true;
  }
  return false;
}

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void put_bytes_field(std::string& out, uint32_t field, std::string_view bytes) {
  put_varint(out, (uint64_t{field} << 3) | kLengthDelimited);
  put_varint(out, bytes.size());
  out.append(bytes);
}

// One field of a message: its bytes [begin, end), number, wire type, and for a
// varint its value, for a length-delimited field its payload [payload, end).
struct Field {
  const uint8_t* begin = nullptr;
  const uint8_t* payload = nullptr;
  const uint8_t* end = nullptr;
  uint32_t number = 0;
  uint32_t wire_type = 0;
  uint64_t value = 0;
};

// The next field at `p` (< end); false on a malformed or group-encoded field.
bool next_field(const uint8_t*& p, const uint8_t* end, Field* f) {
  f->begin = p;
  uint64_t tag = 0;
  if (!read_varint(p, end, &tag) || (tag >> 3) == 0 || (tag >> 3) > std::numeric_limits<uint32_t>::max()) return false;
  f->number = static_cast<uint32_t>(tag >> 3);
  f->wire_type = static_cast<uint32_t>(tag & 7);
  f->payload = p;
  uint64_t skip = 0;
  switch (f->wire_type) {
    case kVarint:
      if (!read_varint(p, end, &f->value)) return false;
      break;
    case kFixed64: skip = 8; break;
    case kFixed32: skip = 4; break;
    case kLengthDelimited:
      if (!read_varint(p, end, &skip)) return false;
      f->payload = p;
      break;
    default: return false;  // groups (deprecated) are not in ONNX files
  }
  if (skip > static_cast<uint64_t>(end - p)) return false;
  p += skip;
  f->end = p;
  return true;
}

// What rewriting a file needs: where the mapping starts, the file's name, the weights moved (name -> raw data).
struct Rewrite {
  const uint8_t* file_begin = nullptr;
  std::string location;
  std::map<std::string, std::span<const uint8_t>> moved;
  std::set<std::string> names, repeated;  // of every initializer
};

// A TensorProto: a FLOAT tensor with inline raw_data of kOutOfPlaceMinBytes or more
// (and no data location of its own) loses raw_data and gains external data naming
// that range of the file; any other tensor is copied as it is.
bool rewrite_tensor(const uint8_t* begin, const uint8_t* end, Rewrite& rw, std::string& out) {
  const uint8_t* raw = nullptr;
  uint64_t raw_size = 0;
  bool is_float = false, has_location = false;
  std::string_view name;
  for (const uint8_t* p = begin; p < end;) {
    Field f;
    if (!next_field(p, end, &f)) return false;
    if (f.number == kTensorName && f.wire_type == kLengthDelimited)
      name = std::string_view(reinterpret_cast<const char*>(f.payload), static_cast<size_t>(f.end - f.payload));
    if (f.number == kTensorDataType && f.wire_type == kVarint) is_float = f.value == kFloatType;
    if (f.number == kTensorExternalData || f.number == kTensorDataLocation) has_location = true;
    if (f.number == kTensorRawData && f.wire_type == kLengthDelimited) {
      raw = f.payload;
      raw_size = static_cast<uint64_t>(f.end - f.payload);
    }
  }
  if (!rw.names.insert(std::string(name)).second) rw.repeated.insert(std::string(name));
  if (!is_float || has_location || !raw || raw_size < kOutOfPlaceMinBytes) {
    out.append(reinterpret_cast<const char*>(begin), static_cast<size_t>(end - begin));
    return true;
  }
  for (const uint8_t* p = begin; p < end;) {
    Field f;
    next_field(p, end, &f);  // checked by the first pass
    if (f.number == kTensorRawData) continue;
    out.append(reinterpret_cast<const char*>(f.begin), static_cast<size_t>(f.end - f.begin));
  }
  const std::pair<const char*, std::string> entries[] = {
      {"location", rw.location},
      {"offset", std::to_string(raw - rw.file_begin)},
      {"length", std::to_string(raw_size)}};
  for (const auto& [key, value] : entries) {
    std::string entry;
    put_bytes_field(entry, 1, key);
    put_bytes_field(entry, 2, value);
    put_bytes_field(out, kTensorExternalData, entry);
  }
  put_varint(out, (uint64_t{kTensorDataLocation} << 3) | kVarint);
  put_varint(out, kLocationExternal);
  rw.moved[std::string(name)] = std::span<const uint8_t>(raw, static_cast<size_t>(raw_size));
  return true;
}

// Copies a message, passing the payload of every length-delimited field `target` through `inner`.
template <typename Inner>
bool rewrite_message(const uint8_t* begin, const uint8_t* end, uint32_t target, std::string& out, Inner inner) {
  for (const uint8_t* p = begin; p < end;) {
    Field f;
    if (!next_field(p, end, &f)) return false;
    if (f.number != target || f.wire_type != kLengthDelimited) {
      out.append(reinterpret_cast<const char*>(f.begin), static_cast<size_t>(f.end - f.begin));
      continue;
    }
    std::string payload;
    if (!inner(f.payload, f.end, payload)) return false;
    put_bytes_field(out, target, payload);
  }
  return true;
}

// The file's bytes with large weights made external (their names and bytes in `rw.moved`); empty when nothing moved
// or the wire format was not followed.
std::string rewritten_model(const uint8_t* data, size_t size, Rewrite& rw) {
  std::string out;
  const bool ok = rewrite_message(data, data + size, kModelGraph, out, [&](auto* gb, auto* ge, std::string& graph) {
    return rewrite_message(gb, ge, kGraphInitializer, graph, [&](auto* tb, auto* te, std::string& tensor) {
      return rewrite_tensor(tb, te, rw, tensor);
    });
  });
  if (!ok || rw.moved.empty()) return {};
  return out;
}

}  // namespace

Result<std::shared_ptr<const MappedFile>> MappedFile::map(const std::string& path, bool populate) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return error(Code::kNotFound, "cannot open model file '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
    ::close(fd);
    return error(Code::kInvalidArgument, "model file '", path, "' is not a regular, non-empty file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | (populate ? MAP_POPULATE : 0), fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (mapped == MAP_FAILED)
    return error(Code::kInvalidArgument, "cannot map model file '", path, "': ", std::strerror(map_errno));
  return std::shared_ptr<const MappedFile>(new MappedFile(static_cast<const uint8_t*>(mapped), size));
}

MappedFile::~MappedFile() { ::munmap(const_cast<uint8_t*>(data_), size_); }

namespace {

// read_model_mapped, with the file's pages mapped up front or not (read_model_for_import only parses).
Result<onnx::ModelProto> read_model(const std::string& path, WeightViews* weights, bool populate) {
  *weights = WeightViews{};
  // read_external takes a plain relative name without "..": other names keep the ordinary parse.
  const std::string location = std::filesystem::path(path).filename().string();
  Result<std::shared_ptr<const MappedFile>> file = MappedFile::map(path, populate);
  if (location.empty() || location.find("..") != std::string::npos || !file.ok() ||
      file.value()->size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    return read_model_proto(path);
  Rewrite rw{file.value()->data(), location, {}, {}, {}};
  const std::string lean = rewritten_model(file.value()->data(), file.value()->size(), rw);
  onnx::ModelProto model;
  if (lean.empty() || lean.size() > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      !model.ParseFromArray(lean.data(), static_cast<int>(lean.size())) || !model.has_graph())
    return read_model_proto(path);
  // Views are by name: a name given to several initializers (the last one counts) keeps its external-data read.
  for (const std::string& name : rw.repeated) rw.moved.erase(name);
  if (rw.moved.empty()) return model;
  weights->file = std::move(file).value();
  weights->bytes = std::move(rw.moved);
  return model;
}

}  // namespace

Result<onnx::ModelProto> read_model_mapped(const std::string& path, WeightViews* weights) {
  return read_model(path, weights, /*populate=*/true);
}

Result<onnx::ModelProto> read_model_for_import(const std::string& path) {
  WeightViews unused;
  return read_model(path, &unused, /*populate=*/false);
}

}  // namespace ravnest::fe
