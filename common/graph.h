// The graph IR shared by the compiler (the model, the training graph) and the
// runtime (stage programs).
//
// Invariants kept by every pass that returns a Graph:
//  * `nodes` is in topological order: a node reads only graph inputs,
//    initializers or outputs of nodes before it.
//  * every value name read or written has an entry in `values`.
//  * a value is produced by at most one node.
// Stage programs given to the runtime have only static dims.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace ravnest {

// A dimension: static (value >= 0) or symbolic (symbol non-empty), or unknown.
struct Dim {
  int64_t value = -1;
  std::string symbol;
  bool is_static() const { return value >= 0; }
  static Dim of(int64_t v) { return Dim{v, {}}; }
  static Dim sym(std::string s) { return Dim{-1, std::move(s)}; }
};

struct ValueInfo {
  std::string name;
  DType dtype = DType::kUndefined;
  std::vector<Dim> dims;
  bool has_shape = false;  // false: rank unknown

  bool is_static() const;
  Shape static_shape() const;  // requires is_static()
  std::string shape_string() const;  // "64x1x28x28", "batchx10", "?"
  static ValueInfo of(std::string name, DType dtype, const Shape& shape);
};

// A constant tensor: initializers, Constant ops, folded values, attribute tensors.
struct TensorData {
  DType dtype = DType::kUndefined;
  Shape shape;
  std::vector<uint8_t> bytes;  // row-major, little endian, numel * dtype_size

  int64_t numel() const { return ravnest::numel(shape); }
  template <typename T> const T* data() const { return reinterpret_cast<const T*>(bytes.data()); }
  template <typename T> T* data() { return reinterpret_cast<T*>(bytes.data()); }
  // Values as int64 (from int64/int32/int8/uint8/bool); an error for floats.
  Result<std::vector<int64_t>> as_ints() const;
  // Values as double (from any numeric type).
  std::vector<double> as_doubles() const;
  static TensorData from_ints(const std::vector<int64_t>& values, Shape shape);
  static TensorData from_floats(const std::vector<float>& values, Shape shape);
};

using AttrValue = std::variant<int64_t, float, std::string, std::vector<int64_t>, std::vector<float>,
                               std::vector<std::string>, TensorData>;

struct Node {
  std::string name;
  std::string op;
  std::string domain;  // "" for the ONNX default domain; kRavnestDomain for ours
  std::vector<std::string> inputs;   // "" marks an omitted optional input
  std::vector<std::string> outputs;  // "" marks an omitted optional output
  std::map<std::string, AttrValue> attrs;

  bool has_attr(const std::string& key) const { return attrs.count(key) != 0; }
  int64_t attr_int(const std::string& key, int64_t fallback) const;
  float attr_float(const std::string& key, float fallback) const;
  std::string attr_string(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> attr_ints(const std::string& key, const std::vector<int64_t>& fallback = {}) const;
  std::vector<float> attr_floats(const std::string& key) const;
  const TensorData* attr_tensor(const std::string& key) const;
  // "Conv 'conv1'" — how errors name a node.
  std::string describe() const;
};

inline constexpr const char* kRavnestDomain = "ai.ravnest";

struct Graph {
  std::string name;
  int64_t opset = 0;  // default-domain opset of the model
  std::vector<std::string> inputs;   // graph inputs that are not initializers
  std::vector<std::string> outputs;
  std::vector<Node> nodes;
  std::unordered_map<std::string, ValueInfo> values;
  std::map<std::string, TensorData> initializers;
  // Initializers the optimizer trains (float weights read by compute nodes), marked by the frontend
  // (fe::import_model); every other initializer is a constant. graph_to_proto does not write it.
  std::set<std::string> parameters;
  // Float initializers a kernel updates in place while training, with no gradient
  // (BatchNormalization's running statistics), marked by fe::mark_state. The
  // runtime keeps them beside the parameters: fed to the forward, saved, averaged
  // across clusters, never given to the optimizer. Disjoint from `parameters`.
  std::set<std::string> state;
  std::map<std::string, std::string> metadata;  // free-form key/value pairs

  const ValueInfo* find_value(const std::string& name) const;
  ValueInfo* find_value(const std::string& name);
  bool is_initializer(const std::string& name) const { return initializers.count(name) != 0; }
  // Adds (or replaces) a value description.
  void set_value(ValueInfo info);
  // Index of the node producing `name`, or -1 (graph input / initializer).
  int producer(const std::string& name) const;
  // For each value, the indices of nodes reading it.
  std::unordered_map<std::string, std::vector<int>> consumers() const;
  // Checks the invariants above; the error names the first offending node.
  Status validate() const;
};

}  // namespace ravnest
