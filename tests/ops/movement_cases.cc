// Cases and float64 references for the movement family (frontend/ops/movement.cc):
// Transpose, Unsqueeze, Squeeze, Concat, Split, Slice, Gather, Expand, Pad, Tile,
// Cast, Dropout — plus Dropout's determinism (same run context, same mask; another
// step, micro-batch, node or seed, another mask; kept fraction near 1 - ratio;
// evaluation is the identity) and its training-mode gradient through autodiff.
// The references compute from the ONNX definitions directly, sharing no code with
// the shape rules or the kernels.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <numeric>

#include "frontend/autodiff.h"
#include "frontend/op_table.h"
#include "runtime/executor.h"
#include "runtime/kernel.h"
#include "tests/ops/harness.h"

namespace ravnest::ops_test {
namespace {

using Ints = std::vector<int64_t>;
using Refs = std::vector<RefTensor>;

// Multi-index of flat index i in shape s.
Ints unflatten(int64_t i, const Shape& s) {
  Ints idx(s.size());
  for (size_t d = s.size(); d-- > 0;) {
    idx[d] = s[d] ? i % s[d] : 0;
    i = s[d] ? i / s[d] : 0;
  }
  return idx;
}

int64_t flatten(const Ints& idx, const Shape& s) {
  int64_t f = 0;
  for (size_t d = 0; d < s.size(); ++d) f = f * s[d] + idx[d];
  return f;
}

// out[i] = src.data[source(i's multi-index)] for every output element.
template <typename Fn>
RefTensor gather_from(const RefTensor& src, const Shape& out_shape, Fn source) {
  RefTensor y{src.dtype, out_shape, Vec(static_cast<size_t>(numel(out_shape)))};
  for (int64_t i = 0; i < numel(out_shape); ++i) y.data[static_cast<size_t>(i)] = src.data[source(unflatten(i, out_shape))];
  return y;
}

Ints ints(const RefTensor& t) {
  Ints v;
  for (double d : t.data) v.push_back(static_cast<int64_t>(d));
  return v;
}

int64_t norm(int64_t axis, size_t rank) { return axis < 0 ? axis + static_cast<int64_t>(rank) : axis; }

Result<Refs> transpose_ref(const Node& node, const Refs& in) {
  const Shape& x = in[0].shape;
  Ints perm(x.size());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(x.size() - 1 - i);
  perm = node.attr_ints("perm", perm);
  Shape y(x.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = x[static_cast<size_t>(perm[i])];
  return Refs{gather_from(in[0], y, [&](const Ints& o) {
    Ints src(x.size());
    for (size_t i = 0; i < o.size(); ++i) src[static_cast<size_t>(perm[i])] = o[i];
    return static_cast<size_t>(flatten(src, x));
  })};
}

Result<Refs> unsqueeze_ref(const Node&, const Refs& in) {
  Ints axes = ints(in[1]);
  const size_t rank = in[0].shape.size() + axes.size();
  std::vector<bool> ones(rank, false);
  for (int64_t a : axes) ones[static_cast<size_t>(norm(a, rank))] = true;
  Shape y;
  size_t next = 0;
  for (size_t d = 0; d < rank; ++d) y.push_back(ones[d] ? 1 : in[0].shape[next++]);
  return Refs{RefTensor{in[0].dtype, y, in[0].data}};
}

Result<Refs> squeeze_ref(const Node&, const Refs& in) {
  const Shape& x = in[0].shape;
  std::vector<bool> drop(x.size(), false);
  if (in.size() > 1 && in[1].dtype != DType::kUndefined) {
    for (int64_t a : ints(in[1])) drop[static_cast<size_t>(norm(a, x.size()))] = true;
  } else {
    for (size_t d = 0; d < x.size(); ++d) drop[d] = x[d] == 1;
  }
  Shape y;
  for (size_t d = 0; d < x.size(); ++d)
    if (!drop[d]) y.push_back(x[d]);
  return Refs{RefTensor{in[0].dtype, y, in[0].data}};
}

Result<Refs> concat_ref(const Node& node, const Refs& in) {
  const size_t axis = static_cast<size_t>(norm(node.attr_int("axis", 0), in[0].shape.size()));
  Shape y = in[0].shape;
  y[axis] = 0;
  for (const RefTensor& t : in) y[axis] += t.shape[axis];
  RefTensor out{in[0].dtype, y, Vec(static_cast<size_t>(numel(y)))};
  for (int64_t i = 0; i < numel(y); ++i) {
    Ints idx = unflatten(i, y);
    size_t k = 0;
    while (idx[axis] >= in[k].shape[axis]) idx[axis] -= in[k++].shape[axis];
    out.data[static_cast<size_t>(i)] = in[k].data[static_cast<size_t>(flatten(idx, in[k].shape))];
  }
  return Refs{out};
}

Result<Refs> split_ref(const Node& node, const Refs& in) {
  const Shape& x = in[0].shape;
  const size_t axis = static_cast<size_t>(norm(node.attr_int("axis", 0), x.size()));
  const int64_t parts = static_cast<int64_t>(node.outputs.size());
  Ints sizes;
  if (in.size() > 1 && in[1].dtype != DType::kUndefined) {
    sizes = ints(in[1]);
  } else {
    const int64_t chunk = (x[axis] + parts - 1) / parts;  // opset 18: the last part may be smaller
    for (int64_t k = 0, left = x[axis]; k < parts; ++k, left -= chunk) sizes.push_back(std::min(chunk, left));
  }
  Refs out;
  int64_t offset = 0;
  for (int64_t size : sizes) {
    Shape y = x;
    y[axis] = size;
    out.push_back(gather_from(in[0], y, [&](Ints o) {
      o[axis] += offset;
      return static_cast<size_t>(flatten(o, x));
    }));
    offset += size;
  }
  return out;
}

// Python slicing per axis: the index sequence start, start+step, ... within range.
Result<Refs> slice_ref(const Node&, const Refs& in) {
  const Shape& x = in[0].shape;
  Ints starts = ints(in[1]), ends = ints(in[2]);
  Ints axes(starts.size()), steps(starts.size(), 1);
  std::iota(axes.begin(), axes.end(), 0);
  if (in.size() > 3 && in[3].dtype != DType::kUndefined) axes = ints(in[3]);
  if (in.size() > 4 && in[4].dtype != DType::kUndefined) steps = ints(in[4]);
  std::vector<Ints> picks(x.size());
  for (size_t d = 0; d < x.size(); ++d)
    for (int64_t i = 0; i < x[d]; ++i) picks[d].push_back(i);
  for (size_t k = 0; k < starts.size(); ++k) {
    const size_t d = static_cast<size_t>(norm(axes[k], x.size()));
    const int64_t n = x[d], step = steps[k];
    auto fix = [&](int64_t v, int64_t lo, int64_t hi) {
      if (v < 0) v = std::max<int64_t>(v, -n - 1) + n;  // beyond -n clamps
      return std::clamp(v, lo, hi);
    };
    int64_t s = step > 0 ? fix(starts[k], 0, n) : fix(starts[k], -1, n - 1);
    int64_t e = step > 0 ? fix(ends[k], 0, n) : fix(ends[k], -1, n - 1);
    picks[d].clear();
    for (int64_t i = s; step > 0 ? i < e : i > e; i += step) picks[d].push_back(i);
  }
  Shape y;
  for (const Ints& p : picks) y.push_back(static_cast<int64_t>(p.size()));
  return Refs{gather_from(in[0], y, [&](const Ints& o) {
    Ints src(x.size());
    for (size_t d = 0; d < x.size(); ++d) src[d] = picks[d][static_cast<size_t>(o[d])];
    return static_cast<size_t>(flatten(src, x));
  })};
}

Result<Refs> gather_ref(const Node& node, const Refs& in) {
  const Shape& x = in[0].shape;
  const Shape& ix = in[1].shape;
  const size_t axis = static_cast<size_t>(norm(node.attr_int("axis", 0), x.size()));
  Shape y(x.begin(), x.begin() + static_cast<long>(axis));
  y.insert(y.end(), ix.begin(), ix.end());
  y.insert(y.end(), x.begin() + static_cast<long>(axis) + 1, x.end());
  return Refs{gather_from(in[0], y, [&](const Ints& o) {
    Ints which(o.begin() + static_cast<long>(axis), o.begin() + static_cast<long>(axis + ix.size()));
    int64_t index = static_cast<int64_t>(in[1].data[static_cast<size_t>(flatten(which, ix))]);
    if (index < 0) index += x[axis];
    Ints src(o.begin(), o.begin() + static_cast<long>(axis));
    src.push_back(index);
    src.insert(src.end(), o.begin() + static_cast<long>(axis + ix.size()), o.end());
    return static_cast<size_t>(flatten(src, x));
  })};
}

Result<Refs> expand_ref(const Node&, const Refs& in) {
  const Shape& x = in[0].shape;
  Shape target = ints(in[1]);
  const size_t rank = std::max(x.size(), target.size());
  Shape y(rank);
  for (size_t d = 0; d < rank; ++d) {
    int64_t a = d + x.size() >= rank ? x[d + x.size() - rank] : 1;
    int64_t b = d + target.size() >= rank ? target[d + target.size() - rank] : 1;
    y[d] = std::max(a, b);
  }
  return Refs{gather_from(in[0], y, [&](const Ints& o) {
    Ints src(x.size());
    for (size_t d = 0; d < x.size(); ++d) src[d] = x[d] == 1 ? 0 : o[d + rank - x.size()];
    return static_cast<size_t>(flatten(src, x));
  })};
}

Result<Refs> pad_ref(const Node&, const Refs& in) {
  const Shape& x = in[0].shape;
  Ints pads = ints(in[1]);
  const double value = in.size() > 2 && in[2].dtype != DType::kUndefined ? in[2].data[0] : 0.0;
  Ints axes(x.size());
  std::iota(axes.begin(), axes.end(), 0);
  if (in.size() > 3 && in[3].dtype != DType::kUndefined) axes = ints(in[3]);
  Ints begin(x.size(), 0);
  Shape y = x;
  for (size_t k = 0; k < axes.size(); ++k) {
    const size_t d = static_cast<size_t>(norm(axes[k], x.size()));
    begin[d] = pads[k];
    y[d] += pads[k] + pads[k + axes.size()];
  }
  RefTensor out{in[0].dtype, y, Vec(static_cast<size_t>(numel(y)), value)};
  for (int64_t i = 0; i < numel(y); ++i) {
    Ints o = unflatten(i, y);
    bool inside = true;
    for (size_t d = 0; d < x.size(); ++d) {
      o[d] -= begin[d];
      inside = inside && o[d] >= 0 && o[d] < x[d];
    }
    if (inside) out.data[static_cast<size_t>(i)] = in[0].data[static_cast<size_t>(flatten(o, x))];
  }
  return Refs{out};
}

Result<Refs> tile_ref(const Node&, const Refs& in) {
  const Shape& x = in[0].shape;
  Ints reps = ints(in[1]);
  Shape y = x;
  for (size_t d = 0; d < x.size(); ++d) y[d] *= reps[d];
  return Refs{gather_from(in[0], y, [&](Ints o) {
    for (size_t d = 0; d < x.size(); ++d) o[d] %= x[d];
    return static_cast<size_t>(flatten(o, x));
  })};
}

Result<Refs> cast_ref(const Node& node, const Refs& in) {
  DType to = static_cast<DType>(node.attr_int("to", 1));
  RefTensor y{to, in[0].shape, in[0].data};
  for (double& v : y.data) {
    if (to == DType::kBool) v = v != 0 ? 1 : 0;
    else if (to == DType::kF32) v = static_cast<double>(static_cast<float>(v));
    else if (to != DType::kF64) v = std::trunc(v);
  }
  return Refs{y};
}

// Covers the cases where Dropout is the identity (ratio 0 or training_mode false);
// the random mask is tested below.
Result<Refs> dropout_ref(const Node& node, const Refs& in) {
  const double ratio = in.size() > 1 && in[1].dtype != DType::kUndefined ? in[1].data[0] : 0.5;
  const bool training = in.size() > 2 && in[2].dtype != DType::kUndefined && in[2].data[0] != 0;
  if (training && ratio != 0)
    return error(Code::kUnsupported, node.op, ": the reference covers ratio 0 or training_mode false only");
  Refs out{in[0]};
  if (node.outputs.size() > 1) out.push_back(RefTensor{DType::kBool, in[0].shape, Vec(in[0].data.size(), 1.0)});
  return out;
}

InputSpec spec(const std::string& name, Shape shape, Role role) {
  InputSpec s;
  s.name = name;
  s.shape = std::move(shape);
  s.role = role;
  return s;
}
InputSpec act(const std::string& name, Shape shape) { return spec(name, std::move(shape), Role::kActivation); }
InputSpec param(const std::string& name, Shape shape) { return spec(name, std::move(shape), Role::kParameter); }
InputSpec ints_const(const std::string& name, const Ints& values) {
  Vec v(values.begin(), values.end());
  return InputSpec{name, {static_cast<int64_t>(values.size())}, Role::kConstant, DType::kI64, fixed(v)};
}
InputSpec omitted() { return spec("", {}, Role::kConstant); }

std::vector<OpCase> movement_cases() {
  std::vector<OpCase> c;
  // Transpose: default perm, the tiled last-two swap at sizes off the tile, NCHW<->NHWC, attention's head split.
  c.push_back({"Transpose/2d_default", make_node("Transpose", {"x"}, {"y"}), {act("x", {5, 7})}});
  c.push_back({"Transpose/swap_last_two_odd", make_node("Transpose", {"x"}, {"y"}, {{"perm", Ints{0, 2, 1}}}),
               {act("x", {3, 17, 19})}});
  c.push_back({"Transpose/weight_2d_tiles", make_node("Transpose", {"w"}, {"y"}, {{"perm", Ints{1, 0}}}),
               {param("w", {33, 40})}});
  c.push_back({"Transpose/heads", make_node("Transpose", {"x"}, {"y"}, {{"perm", Ints{0, 2, 1, 3}}}),
               {act("x", {2, 5, 3, 7})}});
  c.push_back({"Transpose/nhwc_to_nchw", make_node("Transpose", {"x"}, {"y"}, {{"perm", Ints{0, 3, 1, 2}}}),
               {act("x", {2, 5, 6, 3})}});
  c.push_back({"Transpose/size_one_dims", make_node("Transpose", {"x"}, {"y"}, {{"perm", Ints{3, 1, 2, 0}}}),
               {act("x", {1, 9, 1, 11})}});
  // Unsqueeze / Squeeze.
  c.push_back({"Unsqueeze/front_and_back", make_node("Unsqueeze", {"x", "axes"}, {"y"}),
               {act("x", {3, 4}), ints_const("axes", {0, -1})}});
  c.push_back({"Squeeze/axis", make_node("Squeeze", {"x", "axes"}, {"y"}),
               {param("x", {3, 1, 4, 1}), ints_const("axes", {1})}});
  c.push_back({"Squeeze/all_ones", make_node("Squeeze", {"x"}, {"y"}), {act("x", {1, 5, 1})}});
  // Concat: a parameter, an activation and a constant; negative axis; axis 0.
  {
    InputSpec frozen = spec("k", {2, 5, 4}, Role::kConstant);
    c.push_back({"Concat/axis1_mixed_roles", make_node("Concat", {"a", "w", "k"}, {"y"}, {{"axis", int64_t{1}}}),
                 {act("a", {2, 3, 4}), param("w", {2, 1, 4}), frozen}});
  }
  c.push_back({"Concat/last_axis", make_node("Concat", {"a", "b"}, {"y"}, {{"axis", int64_t{-1}}}),
               {act("a", {3, 2, 5}), act("b", {3, 2, 3})}});
  c.push_back({"Concat/same_input_twice", make_node("Concat", {"a", "a"}, {"y"}, {{"axis", int64_t{0}}}),
               {act("a", {2, 3}), act("a", {2, 3})}});
  // Split: opset 13 (split input), opset 18 (num_outputs, uneven), equal parts.
  c.push_back({"Split/opset13_sizes", make_node("Split", {"x", "split"}, {"a", "b", "c"}, {{"axis", int64_t{1}}}),
               {act("x", {2, 7, 3}), ints_const("split", {2, 4, 1})}, 13});
  {
    OpCase s{"Split/opset18_num_outputs_uneven",
             make_node("Split", {"x"}, {"a", "b", "c"}, {{"axis", int64_t{-1}}, {"num_outputs", int64_t{3}}}),
             {param("x", {3, 7})}};
    s.opset = 18;
    c.push_back(s);
  }
  c.push_back({"Split/equal_axis0", make_node("Split", {"x"}, {"a", "b"}), {act("x", {6, 5})}});
  // Slice: negative starts, ends past the dim, negative steps to INT64_MIN, omitted axes.
  c.push_back({"Slice/clamped", make_node("Slice", {"x", "s", "e", "ax"}, {"y"}),
               {act("x", {5, 7}), ints_const("s", {1, -5}), ints_const("e", {4, 100}), ints_const("ax", {0, 1})}});
  c.push_back({"Slice/negative_step", make_node("Slice", {"x", "s", "e", "ax", "st"}, {"y"}),
               {param("x", {4, 9}), ints_const("s", {-1}), ints_const("e", {INT64_MIN}), ints_const("ax", {1}),
                ints_const("st", {-2})}});
  c.push_back({"Slice/steps_3d_no_axes", make_node("Slice", {"x", "s", "e", "", "st"}, {"y"}),
               {act("x", {3, 8, 5}), ints_const("s", {0, 1, 4}), ints_const("e", {3, 8, 0}), omitted(),
                ints_const("st", {2, 3, -1})}});
  // Gather: embedding rows (W, repeated and negative indices), a hidden state on axis 1 (B), a scalar index.
  {
    InputSpec ids{"ids", {2, 3}, Role::kData, DType::kI64, fixed({0, 3, -1, 3, 10, -11})};
    c.push_back({"Gather/embedding", make_node("Gather", {"emb", "ids"}, {"y"}), {param("emb", {11, 6}), ids}});
    InputSpec cols{"ids", {4}, Role::kData, DType::kI64, fixed({4, 0, -2, 0})};
    c.push_back({"Gather/axis1_hidden", make_node("Gather", {"h", "ids"}, {"y"}, {{"axis", int64_t{1}}}),
                 {act("h", {2, 5, 3}), cols}});
    InputSpec first{"i", {}, Role::kConstant, DType::kI64, fixed({0})};
    c.push_back({"Gather/scalar_index_axis1", make_node("Gather", {"h", "i"}, {"y"}, {{"axis", int64_t{1}}}),
                 {act("h", {3, 4, 5}), first}});
    InputSpec ids32{"ids", {5}, Role::kData, DType::kI32, integers(-7, 6)};
    c.push_back({"Gather/int32_activation", make_node("Gather", {"x", "ids"}, {"y"}), {act("x", {7, 2, 3}), ids32}});
  }
  // Expand: leading dims, bidirectional broadcast, scalar.
  c.push_back({"Expand/lead_and_inner", make_node("Expand", {"x", "shape"}, {"y"}),
               {act("x", {3, 1}), ints_const("shape", {2, 3, 4})}});
  c.push_back({"Expand/bidirectional", make_node("Expand", {"w", "shape"}, {"y"}),
               {param("w", {1, 4}), ints_const("shape", {3, 1})}});
  c.push_back({"Expand/scalar", make_node("Expand", {"x", "shape"}, {"y"}), {act("x", {}), ints_const("shape", {2, 3})}});
  // Pad: constant value, opset-18 axes.
  {
    InputSpec value{"v", {}, Role::kConstant, DType::kF32, fixed({0.5})};
    c.push_back({"Pad/all_axes_value", make_node("Pad", {"x", "pads", "v"}, {"y"}),
                 {act("x", {2, 3, 4}), ints_const("pads", {0, 1, 2, 0, 2, 1}), value}});
    OpCase axes{"Pad/opset18_axes", make_node("Pad", {"w", "pads", "", "axes"}, {"y"}),
                {param("w", {3, 5}), ints_const("pads", {1, 3}), omitted(), ints_const("axes", {-1})}};
    axes.opset = 18;
    c.push_back(axes);
  }
  // Tile.
  c.push_back({"Tile/2d", make_node("Tile", {"x", "r"}, {"y"}), {act("x", {2, 3}), ints_const("r", {2, 3})}});
  c.push_back({"Tile/3d_ones", make_node("Tile", {"w", "r"}, {"y"}), {param("w", {3, 1, 2}), ints_const("r", {1, 4, 2})}});
  // Cast: float to float (gradient cast back), to integers and bool, back to float.
  c.push_back({"Cast/f32_to_f64", make_node("Cast", {"x"}, {"y"}, {{"to", int64_t{11}}}), {act("x", {3, 5})}});
  {
    OpCase to_int{"Cast/f32_to_i64", make_node("Cast", {"x"}, {"y"}, {{"to", int64_t{7}}}),
                  {InputSpec{"x", {2, 7}, Role::kData, DType::kF32, uniform(-9, 9)}}};
    to_int.check_gradients = false;
    c.push_back(to_int);
    OpCase to_i32{"Cast/i64_to_i32", make_node("Cast", {"x"}, {"y"}, {{"to", int64_t{6}}}),
                  {InputSpec{"x", {9}, Role::kData, DType::kI64, integers(-1000, 1000)}}};
    to_i32.check_gradients = false;
    c.push_back(to_i32);
    OpCase to_bool{"Cast/f32_to_bool", make_node("Cast", {"x"}, {"y"}, {{"to", int64_t{9}}}),
                   {InputSpec{"x", {4, 4}, Role::kData, DType::kF32, fixed({0, 1, -2, 0, 0.5, 0, 0, 3, 0, 0, 1, 1, 0, -1, 0, 2})}}};
    to_bool.check_gradients = false;
    c.push_back(to_bool);
    c.push_back({"Cast/i64_to_f32", make_node("Cast", {"x"}, {"y"}, {{"to", int64_t{1}}}),
                 {InputSpec{"x", {5}, Role::kData, DType::kI64, integers(-50, 50)}}});
    c.push_back({"Cast/bool_to_f32", make_node("Cast", {"x"}, {"y"}, {{"to", int64_t{1}}}),
                 {InputSpec{"x", {6}, Role::kData, DType::kBool, integers(0, 1)}}});
  }
  // Dropout where it is the identity: ratio 0 in training mode, training_mode false, no optional inputs.
  {
    InputSpec zero{"ratio", {}, Role::kConstant, DType::kF32, fixed({0.0})};
    InputSpec high{"ratio", {}, Role::kConstant, DType::kF32, fixed({0.3})};
    InputSpec on{"train", {}, Role::kConstant, DType::kBool, fixed({1})};
    InputSpec off{"train", {}, Role::kConstant, DType::kBool, fixed({0})};
    c.push_back({"Dropout/ratio0_training", make_node("Dropout", {"x", "ratio", "train"}, {"y", "mask"}),
                 {act("x", {4, 9}), zero, on}});
    c.push_back({"Dropout/training_mode_false", make_node("Dropout", {"x", "ratio", "train"}, {"y", "mask"}),
                 {act("x", {3, 5, 2}), high, off}});
    c.push_back({"Dropout/defaults", make_node("Dropout", {"x"}, {"y"}), {param("x", {7})}});
  }
  return c;
}

const bool kRegistered =
    register_reference("Transpose", transpose_ref) && register_reference("Unsqueeze", unsqueeze_ref) &&
    register_reference("Squeeze", squeeze_ref) && register_reference("Concat", concat_ref) &&
    register_reference("Split", split_ref) && register_reference("Slice", slice_ref) &&
    register_reference("Gather", gather_ref) && register_reference("Expand", expand_ref) &&
    register_reference("Pad", pad_ref) && register_reference("Tile", tile_ref) &&
    register_reference("Cast", cast_ref) && register_reference("Dropout", dropout_ref) &&
    register_cases(movement_cases());

// ---- Dropout in training mode ----

// A Dropout node (ratio and training_mode constants) as a one-node program run by the executor.
struct DropoutRun {
  std::vector<float> y;
  std::vector<uint8_t> mask;
};

Graph dropout_graph(const std::string& node_name, int64_t n, float ratio, bool training_mode) {
  Graph g;
  g.name = "dropout";
  g.opset = 17;
  g.inputs = {"x"};
  g.set_value(ValueInfo::of("x", DType::kF32, {n}));
  g.initializers["ratio"] = TensorData::from_floats({ratio}, {});
  g.set_value(ValueInfo::of("ratio", DType::kF32, {}));
  TensorData mode;
  mode.dtype = DType::kBool;
  mode.bytes = {static_cast<uint8_t>(training_mode)};
  g.initializers["train"] = mode;
  g.set_value(ValueInfo::of("train", DType::kBool, {}));
  Node node = make_node("Dropout", {"x", "ratio", "train"}, {"y", "mask"});
  node.name = node_name;
  g.nodes.push_back(node);
  g.set_value(ValueInfo::of("y", DType::kF32, {n}));
  g.set_value(ValueInfo::of("mask", DType::kBool, {n}));
  g.outputs = {"y", "mask"};
  return g;
}

std::vector<float> ramp(int64_t n) {
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = 1.0f + static_cast<float>(i % 97) * 0.25f;
  return x;
}

DropoutRun run_dropout(const Graph& g, const rt::RunContext& context) {
  auto exec = rt::Executor::create(g, rt::KernelRegistry::global());
  EXPECT_TRUE(exec.ok()) << exec.status().to_string();
  if (!exec.ok()) return {};
  const int64_t n = g.find_value("x")->static_shape()[0];
  std::vector<float> x = ramp(n);
  rt::TensorMap feeds{{"x", rt::Tensor::view(DType::kF32, {n}, x.data())}};
  rt::TensorMap out;
  Status s = (*exec)->run(feeds, &out, context);
  EXPECT_TRUE(s.ok()) << s.to_string();
  DropoutRun r;
  if (!s.ok()) return r;
  r.y.assign(out.at("y").data<float>(), out.at("y").data<float>() + n);
  r.mask.assign(out.at("mask").data<uint8_t>(), out.at("mask").data<uint8_t>() + n);
  return r;
}

TEST(MovementDropout, MaskIsReproducibleAndKeyedByRunAndNode) {
  constexpr int64_t kN = 100003;
  constexpr float kRatio = 0.3f;
  const Graph g = dropout_graph("drop_a", kN, kRatio, true);
  const rt::RunContext base{42, 7, 1, true};
  DropoutRun first = run_dropout(g, base);
  DropoutRun again = run_dropout(g, base);
  ASSERT_EQ(first.mask.size(), static_cast<size_t>(kN));
  EXPECT_EQ(first.mask, again.mask);
  EXPECT_EQ(first.y, again.y);

  // Kept fraction near 1 - ratio (std of the fraction ~0.0015 at this n), and Y = X * mask / (1 - ratio).
  const std::vector<float> x = ramp(kN);
  int64_t kept = 0;
  for (int64_t i = 0; i < kN; ++i) {
    const size_t k = static_cast<size_t>(i);
    kept += first.mask[k];
    const float want = first.mask[k] ? x[k] / (1.0f - kRatio) : 0.0f;
    ASSERT_FLOAT_EQ(first.y[k], want) << "element " << i;
  }
  EXPECT_NEAR(static_cast<double>(kept) / kN, 1.0 - kRatio, 0.01);

  auto differs = [&](const DropoutRun& other) {
    int64_t changed = 0;
    for (size_t i = 0; i < other.mask.size(); ++i) changed += other.mask[i] != first.mask[i];
    return changed;
  };
  // Independent masks disagree on ~2 * 0.3 * 0.7 = 42% of the elements.
  const int64_t floor = kN / 4;
  EXPECT_GT(differs(run_dropout(g, {42, 8, 1, true})), floor) << "another step";
  EXPECT_GT(differs(run_dropout(g, {42, 7, 2, true})), floor) << "another micro-batch";
  EXPECT_GT(differs(run_dropout(g, {43, 7, 1, true})), floor) << "another seed";
  EXPECT_GT(differs(run_dropout(dropout_graph("drop_b", kN, kRatio, true), base)), floor) << "another node";
}

TEST(MovementDropout, EvaluationAndTrainingModeFalseAreTheIdentity) {
  constexpr int64_t kN = 1000;
  const std::vector<float> x = ramp(kN);
  for (const auto& [graph, context] :
       {std::make_pair(dropout_graph("d", kN, 0.5f, true), rt::RunContext{1, 2, 3, false}),
        std::make_pair(dropout_graph("d", kN, 0.5f, false), rt::RunContext{1, 2, 3, true})}) {
    DropoutRun r = run_dropout(graph, context);
    EXPECT_EQ(r.y, x);
    EXPECT_EQ(r.mask, std::vector<uint8_t>(kN, 1));
  }
}

// Forward and backward of a training-mode Dropout through autodiff: the backward reads
// the forward's mask (added by GradBuilder::forward_output) and dX = dY * mask / (1 - ratio).
TEST(MovementDropout, GradientUsesTheForwardMask) {
  constexpr int64_t kN = 4099;
  Graph g = dropout_graph("drop", kN, 0.25f, true);
  Node& node = g.nodes[0];
  node.outputs = {"y"};  // the mask output omitted, as when nothing reads it
  g.values.erase("mask");
  g.outputs = {"y"};
  fe::BackwardRequest request;
  request.seeds = {"y"};
  request.inputs_needing_grad = {"x"};
  auto bg = fe::build_backward(g, request);
  ASSERT_TRUE(bg.ok()) << bg.status().to_string();
  ASSERT_EQ(g.nodes[0].outputs.size(), 2u) << "autodiff must add the mask output";
  const std::string mask = g.nodes[0].outputs[1];
  bool b_work = false;
  for (size_t i = 0; i < bg->nodes.size(); ++i)
    if (bg->nodes[i].op == "DropoutGrad") b_work = bg->work[i] == fe::Work::kB;
  EXPECT_TRUE(b_work) << "the gradient of an activation is B work";

  Graph program = g;
  program.inputs.push_back("seed/y");
  for (const Node& n : bg->nodes) program.nodes.push_back(n);
  for (const auto& [name, info] : bg->values) program.set_value(info);
  for (const auto& [name, data] : bg->constants) program.initializers[name] = data;
  program.outputs = {"y", mask, "grad/x"};
  auto exec = rt::Executor::create(program, rt::KernelRegistry::global());
  ASSERT_TRUE(exec.ok()) << exec.status().to_string();
  std::vector<float> x = ramp(kN), dy(static_cast<size_t>(kN));
  for (int64_t i = 0; i < kN; ++i) dy[static_cast<size_t>(i)] = 0.5f - static_cast<float>(i % 13) * 0.1f;
  rt::TensorMap feeds{{"x", rt::Tensor::view(DType::kF32, {kN}, x.data())},
                      {"seed/y", rt::Tensor::view(DType::kF32, {kN}, dy.data())}};
  rt::TensorMap out;
  ASSERT_TRUE((*exec)->run(feeds, &out, rt::RunContext{5, 1, 0, true}).ok());
  const uint8_t* m = out.at(mask).data<uint8_t>();
  const float* dx = out.at("grad/x").data<float>();
  const float* y = out.at("y").data<float>();
  int64_t dropped = 0;
  for (int64_t i = 0; i < kN; ++i) {
    dropped += m[i] == 0;
    ASSERT_FLOAT_EQ(dx[i], m[i] ? dy[static_cast<size_t>(i)] / 0.75f : 0.0f) << i;
    ASSERT_FLOAT_EQ(y[i], m[i] ? x[static_cast<size_t>(i)] / 0.75f : 0.0f) << i;
  }
  EXPECT_GT(dropped, kN / 8);
  EXPECT_LT(dropped, kN / 2);
}

}  // namespace
}  // namespace ravnest::ops_test
