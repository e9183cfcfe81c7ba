// Helpers of the op rules: checked reads of node inputs and the single home of
// window, reshape, slice and broadcast geometry (see rule_util.h).
#include "frontend/rule_util.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ravnest::fe::rules {

bool has_input(const Node& node, size_t i) { return i < node.inputs.size() && !node.inputs[i].empty(); }
bool has_output(const Node& node, size_t i) { return i < node.outputs.size() && !node.outputs[i].empty(); }

namespace {

Result<const ValueInfo*> in_info(const Node& node, const Graph& graph, size_t i) {
  if (!has_input(node, i)) return node_error(node, "input ", i, " is missing");
  const ValueInfo* info = graph.find_value(node.inputs[i]);
  if (!info) return node_error(node, "input '", node.inputs[i], "' has no type information");
  return info;
}

}  // namespace

Result<Shape> in_shape(const Node& node, const Graph& graph, size_t i) {
  RN_ASSIGN_OR_RETURN(const ValueInfo* info, in_info(node, graph, i));
  if (!info->is_static())
    return node_error(node, "input '", info->name, "' has shape ", info->shape_string(),
                      ", not a static shape; pass --shape NAME=... or --batch N for the model's inputs");
  return info->static_shape();
}

Result<DType> in_dtype(const Node& node, const Graph& graph, size_t i) {
  RN_ASSIGN_OR_RETURN(const ValueInfo* info, in_info(node, graph, i));
  if (info->dtype == DType::kUndefined) return node_error(node, "input '", info->name, "' has no element type");
  return info->dtype;
}

void set_out(Graph& graph, const Node& node, size_t i, DType dtype, const Shape& shape) {
  if (!has_output(node, i)) return;
  graph.set_value(ValueInfo::of(node.outputs[i], dtype, shape));
}

Shape out_shape(const Node& node, const Graph& graph, size_t i) {
  if (!has_output(node, i)) return {};
  const ValueInfo* info = graph.find_value(node.outputs[i]);
  return info && info->is_static() ? info->static_shape() : Shape{};
}

const TensorData* const_input(const Node& node, const Graph& graph, size_t i) {
  if (!has_input(node, i)) return nullptr;
  auto it = graph.initializers.find(node.inputs[i]);
  return it == graph.initializers.end() ? nullptr : &it->second;
}

Result<std::vector<int64_t>> const_ints(const Node& node, const Graph& graph, size_t i, const char* what) {
  const TensorData* t = const_input(node, graph, i);
  if (!t) {
    std::string name = has_input(node, i) ? node.inputs[i] : std::string("(missing)");
    return node_error(node, what, " input '", name,
                      "' is not a compile-time constant; Ravnest needs it to be computable from static shapes");
  }
  auto values = t->as_ints();
  if (!values.ok()) return values.status().with_context(node.describe() + ": " + what + " input '" + node.inputs[i] + "'");
  return values;
}

Result<std::vector<int64_t>> axes_of(const Node& node, const Graph& graph, size_t i, bool* present) {
  if (has_input(node, i)) {
    *present = true;
    return const_ints(node, graph, i, "axes");
  }
  *present = node.has_attr("axes");
  return node.attr_ints("axes");
}

Result<int64_t> norm_axis(const Node& node, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank)
    return node_error(node, "axis ", axis, " is out of range for rank ", rank);
  return axis < 0 ? axis + rank : axis;
}

Result<Shape> broadcast(const Node& node, const Shape& a, const Shape& b) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1)
      return node_error(node, "shapes ", shape_str(a), " and ", shape_str(b), " do not broadcast (dim ", i, ": ", da,
                        " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

bool is_float(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kF16 || dtype == DType::kBF16;
}

Result<int64_t> window_out(const Node& node, int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                           int64_t pad_begin, int64_t pad_end, bool ceil_mode) {
  if (kernel <= 0 || stride <= 0 || dilation <= 0 || pad_begin < 0 || pad_end < 0)
    return node_error(node, "invalid window: kernel ", kernel, ", stride ", stride, ", dilation ", dilation, ", pads ",
                      pad_begin, "/", pad_end, " (kernel, stride, dilation must be positive, pads non-negative)");
  int64_t span = dilation * (kernel - 1) + 1;
  int64_t padded = in + pad_begin + pad_end;
  if (padded < span)
    return node_error(node, "window of size ", span, " (kernel ", kernel, ", dilation ", dilation,
                      ") does not fit the padded input dim ", padded);
  int64_t out = (padded - span) / stride + 1;
  if (ceil_mode && (padded - span) % stride != 0) {
    // PyTorch / ONNX: the last window must start inside the input or its left padding.
    if (out * stride < in + pad_begin) ++out;
  }
  return out;
}

double ConvGeometry::macs() const {
  return static_cast<double>(n) * c_out * oh * ow * (c_in / group) * kh * kw;
}

namespace {

Status require_notset(const Node& node) {
  std::string auto_pad = node.attr_string("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET")
    return error(Code::kUnsupported, node.describe(), ": auto_pad '", auto_pad,
                 "' is not supported; re-export with explicit pads (auto_pad NOTSET)");
  return ok_status();
}

Result<std::vector<int64_t>> pair_attr(const Node& node, const char* key, int64_t fallback, size_t count) {
  std::vector<int64_t> v = node.attr_ints(key, std::vector<int64_t>(count, fallback));
  if (v.size() != count) return node_error(node, "attribute ", key, " has ", v.size(), " values, expected ", count);
  return v;
}

}  // namespace

Result<ConvGeometry> conv_geometry(const Node& node, const Shape& x, const Shape& w) {
  RN_RETURN_IF_ERROR(require_notset(node));
  if (x.size() != 4 || w.size() != 4)
    return error(Code::kUnsupported, node.describe(), ": only 2-D convolution is supported (input ", shape_str(x),
                 ", weight ", shape_str(w), "; expected NCHW and MCkHkW)");
  ConvGeometry g;
  g.n = x[0], g.c_in = x[1], g.h = x[2], g.w = x[3];
  g.c_out = w[0], g.kh = w[2], g.kw = w[3];
  g.group = node.attr_int("group", 1);
  if (g.group <= 0 || g.c_in % g.group != 0 || g.c_out % g.group != 0 || w[1] * g.group != g.c_in)
    return node_error(node, "group ", g.group, " does not fit input channels ", g.c_in, " and weight ", shape_str(w),
                      " (need C = weight[1] * group and M divisible by group)");
  std::vector<int64_t> kernel = node.attr_ints("kernel_shape", {g.kh, g.kw});
  if (kernel != std::vector<int64_t>{g.kh, g.kw})
    return node_error(node, "kernel_shape ", shape_str(kernel), " does not match weight ", shape_str(w));
  RN_ASSIGN_OR_RETURN(g.strides, pair_attr(node, "strides", 1, 2));
  RN_ASSIGN_OR_RETURN(g.dilations, pair_attr(node, "dilations", 1, 2));
  RN_ASSIGN_OR_RETURN(g.pads, pair_attr(node, "pads", 0, 4));
  RN_ASSIGN_OR_RETURN(g.oh, window_out(node, g.h, g.kh, g.strides[0], g.dilations[0], g.pads[0], g.pads[2], false));
  RN_ASSIGN_OR_RETURN(g.ow, window_out(node, g.w, g.kw, g.strides[1], g.dilations[1], g.pads[1], g.pads[3], false));
  return g;
}

Result<Shape> pool_output(const Node& node, const Shape& x) {
  RN_RETURN_IF_ERROR(require_notset(node));
  if (x.size() != 4)
    return error(Code::kUnsupported, node.describe(), ": only 2-D pooling is supported (input ", shape_str(x),
                 ", expected NCHW)");
  std::vector<int64_t> kernel = node.attr_ints("kernel_shape");
  if (kernel.size() != 2) return node_error(node, "kernel_shape must have 2 values, has ", kernel.size());
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> strides, pair_attr(node, "strides", 1, 2));
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> dilations, pair_attr(node, "dilations", 1, 2));
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> pads, pair_attr(node, "pads", 0, 4));
  bool ceil_mode = node.attr_int("ceil_mode", 0) != 0;
  Shape out = {x[0], x[1], 0, 0};
  for (size_t i = 0; i < 2; ++i) {
    if (pads[i] >= kernel[i] || pads[i + 2] >= kernel[i])
      return node_error(node, "pads ", shape_str(pads), " must be smaller than kernel ", shape_str(kernel));
    RN_ASSIGN_OR_RETURN(out[2 + i], window_out(node, x[2 + i], kernel[i], strides[i], dilations[i], pads[i],
                                               pads[i + 2], ceil_mode));
  }
  return out;
}

Result<Shape> reshape_target(const Node& node, const Shape& in, const std::vector<int64_t>& spec, bool allowzero) {
  Shape out(spec.size());
  int infer_at = -1;
  int64_t known = 1;
  for (size_t i = 0; i < spec.size(); ++i) {
    int64_t d = spec[i];
    if (d == -1) {
      if (infer_at >= 0) return node_error(node, "shape ", shape_str(spec), " has more than one -1");
      infer_at = static_cast<int>(i);
      continue;
    }
    if (d == 0 && !allowzero) {
      if (i >= in.size())
        return node_error(node, "shape ", shape_str(spec), " copies dim ", i, " (0) but the input ", shape_str(in),
                          " has rank ", in.size());
      d = in[i];
    }
    if (d < 0) return node_error(node, "shape ", shape_str(spec), " has invalid dim ", d);
    out[i] = d;
    if (mul_overflows(known, d, &known)) return node_error(node, "shape ", shape_str(spec), " overflows");
  }
  RN_ASSIGN_OR_RETURN(int64_t total, checked_numel(in));
  if (infer_at >= 0) {
    if (known == 0 || total % known != 0)
      return node_error(node, "cannot reshape ", shape_str(in), " (", total, " elements) to ", shape_str(spec));
    out[static_cast<size_t>(infer_at)] = total / known;
  } else if (known != total) {
    return node_error(node, "cannot reshape ", shape_str(in), " (", total, " elements) to ", shape_str(out), " (",
                      known, " elements)");
  }
  return out;
}

Result<std::vector<SliceAxis>> slice_plan(const Node& node, const Graph& graph, const Shape& data) {
  int64_t rank = static_cast<int64_t>(data.size());
  std::vector<SliceAxis> plan(data.size());
  for (size_t i = 0; i < data.size(); ++i) plan[i] = SliceAxis{0, 1, data[i]};
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> starts, const_ints(node, graph, 1, "starts"));
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> ends, const_ints(node, graph, 2, "ends"));
  std::vector<int64_t> axes(starts.size());
  for (size_t i = 0; i < axes.size(); ++i) axes[i] = static_cast<int64_t>(i);
  std::vector<int64_t> steps(starts.size(), 1);
  if (has_input(node, 3)) {
    RN_ASSIGN_OR_RETURN(axes, const_ints(node, graph, 3, "axes"));
  }
  if (has_input(node, 4)) {
    RN_ASSIGN_OR_RETURN(steps, const_ints(node, graph, 4, "steps"));
  }
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    return node_error(node, "starts, ends, axes and steps must have the same length (", starts.size(), ", ",
                      ends.size(), ", ", axes.size(), ", ", steps.size(), ")");
  std::vector<bool> seen(data.size(), false);
  for (size_t i = 0; i < starts.size(); ++i) {
    RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, axes[i], rank));
    if (seen[static_cast<size_t>(axis)]) return node_error(node, "axis ", axis, " is sliced twice");
    seen[static_cast<size_t>(axis)] = true;
    int64_t dim = data[static_cast<size_t>(axis)];
    int64_t step = steps[i];
    if (step == 0) return node_error(node, "slice step is 0 on axis ", axis);
    if (dim == 0) {
      plan[static_cast<size_t>(axis)] = SliceAxis{0, step, 0};
      continue;
    }
    // Clamp first so that +dim cannot overflow for INT64_MIN/MAX sentinels.
    int64_t start = std::clamp(starts[i], -dim, dim);
    int64_t end = std::clamp(ends[i], -dim - 1, dim);
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    int64_t len = 0;
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      len = end > start ? (end - start + step - 1) / step : 0;
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      len = start > end ? (start - end - step - 1) / (-step) : 0;
    }
    plan[static_cast<size_t>(axis)] = SliceAxis{start, step, len};
  }
  return plan;
}

std::pair<int64_t, int64_t> shape_op_range(const Node& node, int64_t rank) {
  int64_t start = node.attr_int("start", 0);
  int64_t end = node.attr_int("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, start, rank);
  return {start, end};
}

Result<TensorData> constant_value(const Node& node) {
  if (const TensorData* t = node.attr_tensor("value")) return *t;
  if (node.has_attr("value_float")) return TensorData::from_floats({node.attr_float("value_float", 0)}, {});
  if (node.has_attr("value_floats")) {
    std::vector<float> v = node.attr_floats("value_floats");
    return TensorData::from_floats(v, {static_cast<int64_t>(v.size())});
  }
  if (node.has_attr("value_int")) return TensorData::from_ints({node.attr_int("value_int", 0)}, {});
  if (node.has_attr("value_ints")) {
    std::vector<int64_t> v = node.attr_ints("value_ints");
    return TensorData::from_ints(v, {static_cast<int64_t>(v.size())});
  }
  return error(Code::kUnsupported, node.describe(),
               ": Constant needs attribute value, value_float(s) or value_int(s); sparse and string constants are "
               "not supported");
}

Result<TensorData> fill_value(const Node& node) {
  const TensorData* t = node.attr_tensor("value");
  if (!t) return TensorData::from_floats({0.0f}, {1});
  if (t->numel() != 1) return node_error(node, "attribute value must hold one element, holds ", t->numel());
  return *t;
}

Result<RangeParams> range_params(const Node& node, const Graph& graph) {
  const TensorData* operands[3];
  for (size_t i = 0; i < 3; ++i) {
    operands[i] = const_input(node, graph, i);
    if (!operands[i] || operands[i]->numel() != 1)
      return node_error(node, "input ", i, " must be a constant scalar so that the output length is static");
  }
  RangeParams p;
  p.dtype = operands[0]->dtype;
  p.start = operands[0]->as_doubles()[0];
  double limit = operands[1]->as_doubles()[0];
  p.delta = operands[2]->as_doubles()[0];
  if (p.delta == 0) return node_error(node, "delta is 0");
  double count = std::ceil((limit - p.start) / p.delta);
  if (!(count < 1e15)) return node_error(node, "range is too long (", count, " elements)");
  p.count = count > 0 ? static_cast<int64_t>(count) : 0;
  return p;
}

double value_numel(const Graph& graph, const std::string& name) {
  const ValueInfo* info = graph.find_value(name);
  if (!info || !info->is_static()) return 0;
  return static_cast<double>(numel(info->static_shape()));
}

double value_bytes(const Graph& graph, const std::string& name) {
  const ValueInfo* info = graph.find_value(name);
  if (!info) return 0;
  return value_numel(graph, name) * static_cast<double>(dtype_size(info->dtype));
}

}  // namespace ravnest::fe::rules
