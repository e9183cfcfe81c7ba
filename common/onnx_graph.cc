#include "common/onnx_graph.h"

#include <onnx/onnx_pb.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

namespace ravnest {
namespace {

ValueInfo value_from_proto(const onnx::ValueInfoProto& proto) {
  ValueInfo info;
  info.name = proto.name();
  if (!proto.type().has_tensor_type()) return info;
  const auto& tensor_type = proto.type().tensor_type();
  auto dtype = dtype_from_onnx(tensor_type.elem_type());
  info.dtype = dtype.ok() ? dtype.value() : DType::kUndefined;
  if (tensor_type.has_shape()) {
    info.has_shape = true;
    for (const auto& dim : tensor_type.shape().dim()) {
      if (dim.has_dim_value()) info.dims.push_back(Dim::of(dim.dim_value()));
      else if (dim.has_dim_param()) info.dims.push_back(Dim::sym(dim.dim_param()));
      else info.dims.push_back(Dim{});
    }
  }
  return info;
}

void value_to_proto(const ValueInfo& info, onnx::ValueInfoProto* proto) {
  proto->set_name(info.name);
  auto* tensor_type = proto->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(static_cast<int32_t>(info.dtype));
  if (!info.has_shape) return;
  auto* shape = tensor_type->mutable_shape();
  for (const Dim& d : info.dims) {
    auto* dim = shape->add_dim();
    if (d.is_static()) dim->set_dim_value(d.value);
    else if (!d.symbol.empty()) dim->set_dim_param(d.symbol);
  }
}

Result<AttrValue> attr_from_proto(const onnx::AttributeProto& attr, const std::string& base_dir) {
  using A = onnx::AttributeProto;
  switch (attr.type()) {
    case A::INT: return AttrValue(static_cast<int64_t>(attr.i()));
    case A::FLOAT: return AttrValue(attr.f());
    case A::STRING: return AttrValue(attr.s());
    case A::INTS: return AttrValue(std::vector<int64_t>(attr.ints().begin(), attr.ints().end()));
    case A::FLOATS: return AttrValue(std::vector<float>(attr.floats().begin(), attr.floats().end()));
    case A::STRINGS: return AttrValue(std::vector<std::string>(attr.strings().begin(), attr.strings().end()));
    case A::TENSOR: {
      RN_ASSIGN_OR_RETURN(TensorData t, tensor_from_proto(attr.t(), base_dir));
      return AttrValue(std::move(t));
    }
    default:
      return error(Code::kUnsupported, "attribute '", attr.name(), "' has type ", A::AttributeType_Name(attr.type()),
                   ", which Ravnest does not support");
  }
}

void attr_to_proto(const std::string& name, const AttrValue& value, onnx::AttributeProto* attr);

void tensor_to_proto(const std::string& name, const TensorData& t, onnx::TensorProto* proto) {
  proto->set_name(name);
  proto->set_data_type(static_cast<int32_t>(t.dtype));
  for (int64_t d : t.shape) proto->add_dims(d);
  proto->set_raw_data(t.bytes.data(), t.bytes.size());
}

void attr_to_proto(const std::string& name, const AttrValue& value, onnx::AttributeProto* attr) {
  using A = onnx::AttributeProto;
  attr->set_name(name);
  if (auto* v = std::get_if<int64_t>(&value)) {
    attr->set_type(A::INT);
    attr->set_i(*v);
  } else if (auto* v = std::get_if<float>(&value)) {
    attr->set_type(A::FLOAT);
    attr->set_f(*v);
  } else if (auto* v = std::get_if<std::string>(&value)) {
    attr->set_type(A::STRING);
    attr->set_s(*v);
  } else if (auto* v = std::get_if<std::vector<int64_t>>(&value)) {
    attr->set_type(A::INTS);
    for (int64_t x : *v) attr->add_ints(x);
  } else if (auto* v = std::get_if<std::vector<float>>(&value)) {
    attr->set_type(A::FLOATS);
    for (float x : *v) attr->add_floats(x);
  } else if (auto* v = std::get_if<std::vector<std::string>>(&value)) {
    attr->set_type(A::STRINGS);
    for (const auto& x : *v) attr->add_strings(x);
  } else if (auto* v = std::get_if<TensorData>(&value)) {
    attr->set_type(A::TENSOR);
    tensor_to_proto("", *v, attr->mutable_t());
  }
}

// Asks the kernel to back the 2 MiB-aligned part of a fresh, untouched buffer of
// `size` bytes with transparent huge pages (where THP is in "madvise" mode): large
// weights then cost a few hundred page faults instead of one per 4 KiB. Advice only.
void advise_huge_pages(void* data, size_t size) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + size) & ~(kHuge - 1);
  if (size >= kHuge && end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

Result<std::vector<uint8_t>> read_external(const onnx::TensorProto& tensor, const std::string& base_dir,
                                           size_t expected) {
  std::string location;
  int64_t offset = 0;
  int64_t length = -1;
  auto parse_count = [&](const std::string& key, const std::string& text, int64_t* out) -> Status {
    if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos)
      return error(Code::kCorrupt, "initializer '", tensor.name(), "': external data ", key, " '", text,
                   "' is not a non-negative integer");
    *out = std::stoll(text);
    return ok_status();
  };
  for (const auto& entry : tensor.external_data()) {
    if (entry.key() == "location") location = entry.value();
    else if (entry.key() == "offset") RN_RETURN_IF_ERROR(parse_count("offset", entry.value(), &offset));
    else if (entry.key() == "length") RN_RETURN_IF_ERROR(parse_count("length", entry.value(), &length));
  }
  if (location.empty())
    return error(Code::kCorrupt, "initializer '", tensor.name(), "' uses external data but names no location");
  if (base_dir.empty())
    return error(Code::kInvalidArgument, "initializer '", tensor.name(), "' uses external data file '", location,
                 "' but the model was not loaded from a file");
  if (location.find("..") != std::string::npos || (!location.empty() && location[0] == '/'))
    return error(Code::kCorrupt, "initializer '", tensor.name(), "': external data location '", location,
                 "' must be a relative path inside the model's folder");
  std::filesystem::path path = std::filesystem::path(base_dir) / location;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return error(Code::kNotFound, "initializer '", tensor.name(), "': external data file '", path.string(),
                 "' is missing; keep it beside the .onnx file");
  in.seekg(0, std::ios::end);
  int64_t file_size = in.tellg();
  if (length < 0) length = static_cast<int64_t>(expected);
  if (offset < 0 || length != static_cast<int64_t>(expected) || offset > file_size || length > file_size - offset)
    return error(Code::kCorrupt, "initializer '", tensor.name(), "': external data in '", path.string(),
                 "' (offset ", offset, ", length ", length, ") does not hold the ", expected,
                 " bytes its shape needs (file has ", file_size, " bytes)");
  std::vector<uint8_t> bytes;
  bytes.reserve(expected);
  advise_huge_pages(bytes.data(), expected);
  bytes.resize(expected);
  in.seekg(offset);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(expected));
  if (!in) return error(Code::kCorrupt, "could not read external data from '", path.string(), "'");
  return bytes;
}

}  // namespace

Result<TensorData> tensor_from_proto(const onnx::TensorProto& tensor, const std::string& base_dir) {
  TensorData t;
  RN_ASSIGN_OR_RETURN(t.dtype, dtype_from_onnx(tensor.data_type()));
  t.shape.assign(tensor.dims().begin(), tensor.dims().end());
  auto n = checked_numel(t.shape);
  if (!n.ok()) return n.status().with_context("tensor '" + tensor.name() + "'");
  size_t expected = static_cast<size_t>(n.value()) * dtype_size(t.dtype);
  if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
    RN_ASSIGN_OR_RETURN(t.bytes, read_external(tensor, base_dir, expected));
    return t;
  }
  if (tensor.has_raw_data()) {
    if (tensor.raw_data().size() != expected)
      return error(Code::kCorrupt, "tensor '", tensor.name(), "' has ", tensor.raw_data().size(),
                   " bytes of data but its shape ", shape_str(t.shape), " needs ", expected);
    const auto* raw = reinterpret_cast<const uint8_t*>(tensor.raw_data().data());
    t.bytes.assign(raw, raw + expected);  // same element type: one memmove, not a per-char loop
    return t;
  }
  t.bytes.resize(expected);
  size_t count = static_cast<size_t>(n.value());
  auto mismatch = [&](size_t have) {
    return error(Code::kCorrupt, "tensor '", tensor.name(), "' has ", have, " values but its shape ",
                 shape_str(t.shape), " needs ", count);
  };
  switch (t.dtype) {
    case DType::kF32:
      if (static_cast<size_t>(tensor.float_data_size()) != count) return mismatch(tensor.float_data_size());
      std::memcpy(t.bytes.data(), tensor.float_data().data(), expected);
      break;
    case DType::kF64:
      if (static_cast<size_t>(tensor.double_data_size()) != count) return mismatch(tensor.double_data_size());
      std::memcpy(t.bytes.data(), tensor.double_data().data(), expected);
      break;
    case DType::kI64:
      if (static_cast<size_t>(tensor.int64_data_size()) != count) return mismatch(tensor.int64_data_size());
      std::memcpy(t.bytes.data(), tensor.int64_data().data(), expected);
      break;
    case DType::kI32: case DType::kI8: case DType::kU8: case DType::kBool: case DType::kF16: case DType::kBF16: {
      if (static_cast<size_t>(tensor.int32_data_size()) != count) return mismatch(tensor.int32_data_size());
      size_t width = dtype_size(t.dtype);
      for (size_t i = 0; i < count; ++i) {
        int32_t v = tensor.int32_data(static_cast<int>(i));
        std::memcpy(t.bytes.data() + i * width, &v, width);  // little endian: low bytes first
      }
      break;
    }
    default:
      return error(Code::kUnsupported, "tensor '", tensor.name(), "' has element type ", dtype_name(t.dtype),
                   " stored in a form Ravnest does not read");
  }
  return t;
}

Result<onnx::ModelProto> read_model_proto(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return error(Code::kNotFound, "model file '", path, "' does not exist; check the path");
  if (std::filesystem::is_directory(path, ec))
    return error(Code::kInvalidArgument, "'", path, "' is a directory, not an ONNX model file");
  // One mapping of the whole file, parsed in place: no stream, no intermediate copy.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return error(Code::kNotFound, "model file '", path, "' cannot be opened for reading");
  struct stat st {};
  const bool sized = ::fstat(fd, &st) == 0 && st.st_size >= 0;
  const uint64_t size = sized ? static_cast<uint64_t>(st.st_size) : 0;
  if (size > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
    ::close(fd);
    return error(Code::kInvalidArgument, "model file '", path, "' is over 2 GiB; store weights as ONNX external data");
  }
  void* mapped = size > 0 ? ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0) : MAP_FAILED;
  ::close(fd);
  onnx::ModelProto model;
  const bool parsed = mapped != MAP_FAILED && model.ParseFromArray(mapped, static_cast<int>(size));
  if (mapped != MAP_FAILED) ::munmap(mapped, size);
  if (!parsed || !model.has_graph())
    return error(Code::kInvalidArgument, "'", path,
                 "' is not an ONNX model (it does not parse as an ONNX ModelProto with a graph); "
                 "export it with torch.onnx.export or check that the file is complete");
  return model;
}

Result<Graph> graph_from_proto(const onnx::ModelProto& model, const std::string& base_dir) {
  Graph graph;
  const auto& g = model.graph();
  graph.name = g.name();
  for (const auto& opset : model.opset_import())
    if (opset.domain().empty() || opset.domain() == "ai.onnx") graph.opset = opset.version();
  for (const auto& entry : model.metadata_props()) graph.metadata[entry.key()] = entry.value();

  for (const auto& init : g.initializer()) {
    auto tensor = tensor_from_proto(init, base_dir);
    if (!tensor.ok()) return tensor.status();
    graph.set_value(ValueInfo::of(init.name(), tensor->dtype, tensor->shape));
    graph.initializers[init.name()] = std::move(tensor).value();
  }
  for (const auto& vi : g.value_info()) graph.set_value(value_from_proto(vi));
  for (const auto& vi : g.input()) {
    if (graph.is_initializer(vi.name())) continue;
    graph.inputs.push_back(vi.name());
    graph.set_value(value_from_proto(vi));
  }
  for (const auto& vi : g.output()) {
    graph.outputs.push_back(vi.name());
    ValueInfo info = value_from_proto(vi);
    const ValueInfo* known = graph.find_value(vi.name());
    if (!known || (info.has_shape && !known->has_shape)) graph.set_value(std::move(info));
  }
  int unnamed = 0;
  for (const auto& np : g.node()) {
    Node node;
    node.name = np.name().empty() ? np.op_type() + "_" + std::to_string(unnamed++) : np.name();
    node.op = np.op_type();
    node.domain = np.domain() == "ai.onnx" ? "" : np.domain();
    node.inputs.assign(np.input().begin(), np.input().end());
    node.outputs.assign(np.output().begin(), np.output().end());
    for (const auto& attr : np.attribute()) {
      auto value = attr_from_proto(attr, base_dir);
      if (!value.ok()) return value.status().with_context("node " + node.describe());
      node.attrs[attr.name()] = std::move(value).value();
    }
    for (const std::string& out : node.outputs)
      if (!out.empty() && !graph.find_value(out)) graph.set_value(ValueInfo{out, DType::kUndefined, {}, false});
    graph.nodes.push_back(std::move(node));
  }
  return graph;
}

onnx::ModelProto graph_to_proto(const Graph& graph) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("ravnest");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(graph.opset ? graph.opset : 17);
  bool uses_ours = false;
  for (const Node& node : graph.nodes) uses_ours |= node.domain == kRavnestDomain;
  if (uses_ours) {
    auto* ours = model.add_opset_import();
    ours->set_domain(kRavnestDomain);
    ours->set_version(1);
  }
  for (const auto& [key, value] : graph.metadata) {
    auto* entry = model.add_metadata_props();
    entry->set_key(key);
    entry->set_value(value);
  }
  auto* g = model.mutable_graph();
  g->set_name(graph.name);
  for (const auto& [name, tensor] : graph.initializers) tensor_to_proto(name, tensor, g->add_initializer());
  for (const std::string& name : graph.inputs) value_to_proto(graph.values.at(name), g->add_input());
  for (const std::string& name : graph.outputs) value_to_proto(graph.values.at(name), g->add_output());
  for (const Node& node : graph.nodes) {
    auto* np = g->add_node();
    np->set_name(node.name);
    np->set_op_type(node.op);
    np->set_domain(node.domain);
    for (const auto& in : node.inputs) np->add_input(in);
    for (const auto& out : node.outputs) {
      np->add_output(out);
      if (out.empty()) continue;
      bool is_io = false;
      for (const auto& o : graph.outputs) is_io |= o == out;
      if (!is_io) value_to_proto(graph.values.at(out), g->add_value_info());
    }
    for (const auto& [key, value] : node.attrs) attr_to_proto(key, value, np->add_attribute());
  }
  return model;
}

Status write_model_proto(const onnx::ModelProto& model, const std::string& path) {
  std::string bytes;
  if (!model.SerializeToString(&bytes))
    return error(Code::kInternal, "could not serialize model for '", path, "' (over 2 GiB?)");
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return error(Code::kInvalidArgument, "cannot write '", path, "'; check that its folder exists and is writable");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) return error(Code::kInvalidArgument, "failed writing '", path, "' (disk full?)");
  return ok_status();
}

}  // namespace ravnest
