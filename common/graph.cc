#include "common/graph.h"

#include <cstring>
#include <set>
#include <sstream>

namespace ravnest {

bool ValueInfo::is_static() const {
  if (!has_shape) return false;
  for (const Dim& d : dims)
    if (!d.is_static()) return false;
  return true;
}

Shape ValueInfo::static_shape() const {
  Shape shape;
  shape.reserve(dims.size());
  for (const Dim& d : dims) shape.push_back(d.value);
  return shape;
}

std::string ValueInfo::shape_string() const {
  if (!has_shape) return "?";
  if (dims.empty()) return "scalar";
  std::ostringstream out;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) out << 'x';
    if (dims[i].is_static()) out << dims[i].value;
    else if (!dims[i].symbol.empty()) out << dims[i].symbol;
    else out << '?';
  }
  return out.str();
}

ValueInfo ValueInfo::of(std::string name, DType dtype, const Shape& shape) {
  ValueInfo info;
  info.name = std::move(name);
  info.dtype = dtype;
  info.has_shape = true;
  for (int64_t d : shape) info.dims.push_back(Dim::of(d));
  return info;
}

Result<std::vector<int64_t>> TensorData::as_ints() const {
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    switch (dtype) {
      case DType::kI64: out[i] = data<int64_t>()[i]; break;
      case DType::kI32: out[i] = data<int32_t>()[i]; break;
      case DType::kI8: out[i] = data<int8_t>()[i]; break;
      case DType::kU8: case DType::kBool: out[i] = data<uint8_t>()[i]; break;
      default: return error(Code::kInvalidArgument, "expected an integer tensor, got ", dtype_name(dtype));
    }
  }
  return out;
}

std::vector<double> TensorData::as_doubles() const {
  std::vector<double> out(static_cast<size_t>(numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    switch (dtype) {
      case DType::kF32: out[i] = data<float>()[i]; break;
      case DType::kF64: out[i] = data<double>()[i]; break;
      case DType::kI64: out[i] = static_cast<double>(data<int64_t>()[i]); break;
      case DType::kI32: out[i] = data<int32_t>()[i]; break;
      case DType::kI8: out[i] = data<int8_t>()[i]; break;
      case DType::kU8: case DType::kBool: out[i] = data<uint8_t>()[i]; break;
      default: out[i] = 0; break;
    }
  }
  return out;
}

TensorData TensorData::from_ints(const std::vector<int64_t>& values, Shape shape) {
  TensorData t;
  t.dtype = DType::kI64;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(int64_t));
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

TensorData TensorData::from_floats(const std::vector<float>& values, Shape shape) {
  TensorData t;
  t.dtype = DType::kF32;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

int64_t Node::attr_int(const std::string& key, int64_t fallback) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return fallback;
  if (auto* v = std::get_if<int64_t>(&it->second)) return *v;
  return fallback;
}

float Node::attr_float(const std::string& key, float fallback) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return fallback;
  if (auto* v = std::get_if<float>(&it->second)) return *v;
  return fallback;
}

std::string Node::attr_string(const std::string& key, const std::string& fallback) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return fallback;
  if (auto* v = std::get_if<std::string>(&it->second)) return *v;
  return fallback;
}

std::vector<int64_t> Node::attr_ints(const std::string& key, const std::vector<int64_t>& fallback) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return fallback;
  if (auto* v = std::get_if<std::vector<int64_t>>(&it->second)) return *v;
  return fallback;
}

std::vector<float> Node::attr_floats(const std::string& key) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return {};
  if (auto* v = std::get_if<std::vector<float>>(&it->second)) return *v;
  return {};
}

const TensorData* Node::attr_tensor(const std::string& key) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return nullptr;
  return std::get_if<TensorData>(&it->second);
}

std::string Node::describe() const {
  std::string full_op = domain.empty() ? op : domain + "." + op;
  return full_op + " '" + name + "'";
}

const ValueInfo* Graph::find_value(const std::string& name) const {
  auto it = values.find(name);
  return it == values.end() ? nullptr : &it->second;
}

ValueInfo* Graph::find_value(const std::string& name) {
  auto it = values.find(name);
  return it == values.end() ? nullptr : &it->second;
}

void Graph::set_value(ValueInfo info) {
  std::string key = info.name;
  values[key] = std::move(info);
}

int Graph::producer(const std::string& name) const {
  for (size_t i = 0; i < nodes.size(); ++i)
    for (const std::string& out : nodes[i].outputs)
      if (out == name) return static_cast<int>(i);
  return -1;
}

std::unordered_map<std::string, std::vector<int>> Graph::consumers() const {
  std::unordered_map<std::string, std::vector<int>> result;
  for (size_t i = 0; i < nodes.size(); ++i)
    for (const std::string& in : nodes[i].inputs)
      if (!in.empty()) result[in].push_back(static_cast<int>(i));
  return result;
}

Status Graph::validate() const {
  std::set<std::string> defined(inputs.begin(), inputs.end());
  for (const auto& [name, tensor] : initializers) defined.insert(name);
  for (const Node& node : nodes) {
    for (const std::string& in : node.inputs) {
      if (in.empty()) continue;
      if (!defined.count(in))
        return error(Code::kInvalidArgument, "graph '", this->name, "': ", node.describe(), " reads '", in,
                     "' before any node produces it (nodes are not in topological order, or the value is missing)");
    }
    for (const std::string& out : node.outputs) {
      if (out.empty()) continue;
      if (defined.count(out))
        return error(Code::kInvalidArgument, "graph '", this->name, "': value '", out, "' is produced twice (again by ",
                     node.describe(), ")");
      defined.insert(out);
    }
  }
  for (const std::string& out : outputs)
    if (!defined.count(out))
      return error(Code::kInvalidArgument, "graph '", this->name, "': output '", out, "' is never produced");
  for (const std::string& name : defined)
    if (!values.count(name))
      return error(Code::kInvalidArgument, "graph '", this->name, "': value '", name, "' has no type information");
  return ok_status();
}

}  // namespace ravnest
