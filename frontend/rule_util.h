// Helpers shared by the per-op shape, fold and cost rules of the op table
// (frontend/shape_rules.cc, fold_rules.cc, cost_rules.cc). Internal to the frontend.
//
// Guarantees: every helper that reads a node's input checks that the input exists,
// has a static shape (or is a constant initializer) and returns an error that names
// the node, the input and what is wrong. Geometry (conv/pool windows, reshape
// targets, slice plans, broadcasting) is computed in exactly one place here, so the
// shape rule of an op, its fold rule and its cost rule cannot disagree.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/graph.h"

namespace ravnest::fe::rules {

template <typename... Parts>
Status node_error(const Node& node, const Parts&... parts) {
  return error(Code::kInvalidArgument, node.describe(), ": ", parts...);
}

bool has_input(const Node& node, size_t i);
bool has_output(const Node& node, size_t i);
// Static shape / dtype of input i (error if omitted, unknown or symbolic).
Result<Shape> in_shape(const Node& node, const Graph& graph, size_t i);
Result<DType> in_dtype(const Node& node, const Graph& graph, size_t i);
// Records the type of output i (no-op if the output slot is omitted).
void set_out(Graph& graph, const Node& node, size_t i, DType dtype, const Shape& shape);
// Static shape of an output already typed by the shape rule (cost rules run after it).
Shape out_shape(const Node& node, const Graph& graph, size_t i);
// The constant (initializer) behind input i, or nullptr.
const TensorData* const_input(const Node& node, const Graph& graph, size_t i);
// Integer values of constant input i; `what` names it in errors ("shape", "axes").
Result<std::vector<int64_t>> const_ints(const Node& node, const Graph& graph, size_t i, const char* what);
// Axes from input `i` if present, else from attribute "axes" (older opsets); `present` tells which.
Result<std::vector<int64_t>> axes_of(const Node& node, const Graph& graph, size_t i, bool* present);
// Axis in [-rank, rank) to [0, rank).
Result<int64_t> norm_axis(const Node& node, int64_t axis, int64_t rank);
// Numpy (multidirectional) broadcasting of two shapes.
Result<Shape> broadcast(const Node& node, const Shape& a, const Shape& b);

bool is_float(DType dtype);

// Size of one sliding-window output dim ("floor((in + pads - dilated_k) / s) + 1", or ceil).
Result<int64_t> window_out(const Node& node, int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                           int64_t pad_begin, int64_t pad_end, bool ceil_mode);

// 2-D Conv geometry (NCHW input, MCkk weight) from the node's attributes.
struct ConvGeometry {
  int64_t n = 0, c_in = 0, h = 0, w = 0;
  int64_t c_out = 0, group = 1, kh = 0, kw = 0;
  int64_t oh = 0, ow = 0;
  std::vector<int64_t> strides, pads, dilations;  // pads: top, left, bottom, right
  Shape out_shape() const { return {n, c_out, oh, ow}; }
  // Multiply-adds of the forward convolution (bias excluded).
  double macs() const;
};
Result<ConvGeometry> conv_geometry(const Node& node, const Shape& x, const Shape& w);

// 2-D MaxPool output shape [N, C, OH, OW] from the node's attributes.
Result<Shape> pool_output(const Node& node, const Shape& x);

// Reshape semantics: 0 copies the input dim (unless allowzero), -1 is inferred.
Result<Shape> reshape_target(const Node& node, const Shape& in, const std::vector<int64_t>& spec, bool allowzero);

// Per-axis plan of a Slice over `data` (every axis of data, untouched ones full).
struct SliceAxis {
  int64_t start = 0, step = 1, len = 0;
};
Result<std::vector<SliceAxis>> slice_plan(const Node& node, const Graph& graph, const Shape& data);

// Output dims of Shape(start, end) for an input of rank `rank`: [begin, end).
std::pair<int64_t, int64_t> shape_op_range(const Node& node, int64_t rank);

// The tensor a Constant node produces (attribute value, value_float(s), value_int(s)).
Result<TensorData> constant_value(const Node& node);
// The one-element tensor ConstantOfShape fills with (attribute value, default float 0).
Result<TensorData> fill_value(const Node& node);
// Range(start, limit, delta) over constant scalars: element count, and the operands as doubles.
struct RangeParams {
  DType dtype = DType::kUndefined;
  double start = 0, delta = 1;
  int64_t count = 0;
};
Result<RangeParams> range_params(const Node& node, const Graph& graph);

// Bytes of a value with a static type (0 if unknown).
double value_bytes(const Graph& graph, const std::string& name);
double value_numel(const Graph& graph, const std::string& name);

}  // namespace ravnest::fe::rules
