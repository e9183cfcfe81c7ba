// Shape rules of every op in the table (see rules.h). Each rule reads its inputs'
// static types (and constant inputs where an output shape depends on values) and
// writes the types of the outputs that are present. Geometry lives in rule_util.cc.
#include <algorithm>
#include <set>

#include "frontend/rule_util.h"
#include "frontend/rules.h"

namespace ravnest::fe::rules {

Status shape_same(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  set_out(graph, node, 0, dtype, x);
  return ok_status();
}

Status shape_conv(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape w, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(ConvGeometry g, conv_geometry(node, x, w));
  if (has_input(node, 2)) {
    RN_ASSIGN_OR_RETURN(Shape b, in_shape(node, graph, 2));
    if (b != Shape{g.c_out}) return node_error(node, "bias has shape ", shape_str(b), ", expected ", g.c_out);
  }
  set_out(graph, node, 0, dtype, g.out_shape());
  return ok_status();
}

Status shape_maxpool(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape y, pool_output(node, x));
  set_out(graph, node, 0, dtype, y);
  set_out(graph, node, 1, DType::kI64, y);  // Indices
  return ok_status();
}

Status shape_flatten(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  int64_t rank = static_cast<int64_t>(x.size());
  int64_t axis = node.attr_int("axis", 1);
  if (axis < -rank || axis > rank) return node_error(node, "axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < rank; ++i) (i < axis ? outer : inner) *= x[static_cast<size_t>(i)];
  set_out(graph, node, 0, dtype, {outer, inner});
  return ok_status();
}

Status shape_reshape(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> spec, const_ints(node, graph, 1, "shape"));
  RN_ASSIGN_OR_RETURN(Shape y, reshape_target(node, x, spec, node.attr_int("allowzero", 0) != 0));
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_gemm(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape a, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape b, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (a.size() != 2 || b.size() != 2)
    return node_error(node, "A and B must be 2-D, got ", shape_str(a), " and ", shape_str(b));
  bool ta = node.attr_int("transA", 0) != 0, tb = node.attr_int("transB", 0) != 0;
  int64_t m = ta ? a[1] : a[0], k = ta ? a[0] : a[1];
  int64_t kb = tb ? b[1] : b[0], n = tb ? b[0] : b[1];
  if (k != kb)
    return node_error(node, "inner dims differ: A ", shape_str(a), (ta ? " (transposed)" : ""), " vs B ", shape_str(b),
                      (tb ? " (transposed)" : ""));
  if (has_input(node, 2)) {
    RN_ASSIGN_OR_RETURN(Shape c, in_shape(node, graph, 2));
    auto bc = broadcast(node, c, {m, n});
    if (!bc.ok() || bc.value() != Shape{m, n})
      return node_error(node, "C ", shape_str(c), " does not broadcast to the output ", m, "x", n);
  }
  set_out(graph, node, 0, dtype, {m, n});
  return ok_status();
}

Status shape_matmul(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape a, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape b, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (a.empty() || b.empty()) return node_error(node, "inputs must have rank >= 1, got ", shape_str(a), " and ", shape_str(b));
  bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  Shape a2 = a_vec ? Shape{1, a[0]} : a;
  Shape b2 = b_vec ? Shape{b[0], 1} : b;
  int64_t m = a2[a2.size() - 2], k = a2.back(), kb = b2[b2.size() - 2], n = b2.back();
  if (k != kb) return node_error(node, "inner dims differ: ", shape_str(a), " @ ", shape_str(b));
  RN_ASSIGN_OR_RETURN(Shape batch, broadcast(node, Shape(a2.begin(), a2.end() - 2), Shape(b2.begin(), b2.end() - 2)));
  Shape y = batch;
  if (!a_vec) y.push_back(m);
  if (!b_vec) y.push_back(n);
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_broadcast(const Node& node, Graph& graph) {
  if (!has_input(node, 0)) return node_error(node, "needs at least one input");
  RN_ASSIGN_OR_RETURN(Shape y, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  for (size_t i = 1; i < node.inputs.size(); ++i) {
    RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, i));
    RN_ASSIGN_OR_RETURN(DType other, in_dtype(node, graph, i));
    if (other != dtype)
      return node_error(node, "inputs have different element types (", dtype_name(dtype), " and ", dtype_name(other),
                        ")");
    RN_ASSIGN_OR_RETURN(y, broadcast(node, y, x));
  }
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_transpose(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  std::vector<int64_t> perm(x.size());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(perm.size() - 1 - i);
  perm = node.attr_ints("perm", perm);
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  bool valid = perm.size() == x.size();
  for (size_t i = 0; valid && i < sorted.size(); ++i) valid = sorted[i] == static_cast<int64_t>(i);
  if (!valid) return node_error(node, "perm ", shape_str(perm), " is not a permutation of the ", x.size(), " axes");
  Shape y(x.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = x[static_cast<size_t>(perm[i])];
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_reduce_sum(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  bool present = false;
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, axes_of(node, graph, 1, &present));
  bool keepdims = node.attr_int("keepdims", 1) != 0;
  int64_t rank = static_cast<int64_t>(x.size());
  std::vector<bool> reduce(x.size(), false);
  if (axes.empty()) {
    if (node.attr_int("noop_with_empty_axes", 0) != 0) {
      set_out(graph, node, 0, dtype, x);
      return ok_status();
    }
    std::fill(reduce.begin(), reduce.end(), true);
  }
  for (int64_t a : axes) {
    RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, a, rank));
    reduce[static_cast<size_t>(axis)] = true;
  }
  Shape y;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!reduce[i]) y.push_back(x[i]);
    else if (keepdims) y.push_back(1);
  }
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_softmax_ce_loss(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape scores, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape labels, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType label_type, in_dtype(node, graph, 1));
  if (label_type != DType::kI64 && label_type != DType::kI32)
    return node_error(node, "labels must be int64 or int32, got ", dtype_name(label_type));
  if (scores.size() < 2) return node_error(node, "scores must be [N, C, ...], got ", shape_str(scores));
  // labels: scores without the class dim.
  Shape expected = scores;
  expected.erase(expected.begin() + 1);
  if (labels != expected)
    return node_error(node, "labels have shape ", shape_str(labels), " but scores ", shape_str(scores), " need ",
                      shape_str(expected));
  if (has_input(node, 2)) {
    RN_ASSIGN_OR_RETURN(Shape weights, in_shape(node, graph, 2));
    if (weights != Shape{scores[1]})
      return node_error(node, "weights have shape ", shape_str(weights), ", expected ", scores[1]);
  }
  std::string reduction = node.attr_string("reduction", "mean");
  if (reduction == "none") set_out(graph, node, 0, dtype, expected);
  else if (reduction == "mean" || reduction == "sum") set_out(graph, node, 0, dtype, {});
  else return node_error(node, "reduction '", reduction, "' is not one of none, sum, mean");
  set_out(graph, node, 1, dtype, scores);  // log_prob
  return ok_status();
}

Status shape_constant(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(TensorData value, constant_value(node));
  set_out(graph, node, 0, value.dtype, value.shape);
  return ok_status();
}

Status shape_shape(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  auto [begin, end] = shape_op_range(node, static_cast<int64_t>(x.size()));
  set_out(graph, node, 0, DType::kI64, {end - begin});
  return ok_status();
}

Status shape_gather(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape data, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape indices, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType index_type, in_dtype(node, graph, 1));
  if (index_type != DType::kI64 && index_type != DType::kI32)
    return node_error(node, "indices must be int64 or int32, got ", dtype_name(index_type));
  RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, node.attr_int("axis", 0), static_cast<int64_t>(data.size())));
  Shape y(data.begin(), data.begin() + axis);
  y.insert(y.end(), indices.begin(), indices.end());
  y.insert(y.end(), data.begin() + axis + 1, data.end());
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_unsqueeze(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  bool present = false;
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, axes_of(node, graph, 1, &present));
  if (!present) return node_error(node, "needs axes");
  int64_t rank = static_cast<int64_t>(x.size() + axes.size());
  std::vector<bool> inserted(static_cast<size_t>(rank), false);
  for (int64_t a : axes) {
    RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, a, rank));
    if (inserted[static_cast<size_t>(axis)]) return node_error(node, "axis ", a, " appears twice in axes");
    inserted[static_cast<size_t>(axis)] = true;
  }
  Shape y;
  size_t next = 0;
  for (int64_t i = 0; i < rank; ++i) y.push_back(inserted[static_cast<size_t>(i)] ? 1 : x[next++]);
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_squeeze(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  bool present = false;
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, axes_of(node, graph, 1, &present));
  std::vector<bool> removed(x.size(), false);
  if (axes.empty()) {
    for (size_t i = 0; i < x.size(); ++i) removed[i] = x[i] == 1;
  }
  for (int64_t a : axes) {
    RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, a, static_cast<int64_t>(x.size())));
    if (x[static_cast<size_t>(axis)] != 1)
      return node_error(node, "cannot squeeze axis ", a, " of shape ", shape_str(x), " (its size is not 1)");
    removed[static_cast<size_t>(axis)] = true;
  }
  Shape y;
  for (size_t i = 0; i < x.size(); ++i)
    if (!removed[i]) y.push_back(x[i]);
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_concat(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape y, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, node.attr_int("axis", 0), static_cast<int64_t>(y.size())));
  for (size_t i = 1; i < node.inputs.size(); ++i) {
    RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, i));
    RN_ASSIGN_OR_RETURN(DType other, in_dtype(node, graph, i));
    bool same = other == dtype && x.size() == y.size();
    for (size_t d = 0; same && d < x.size(); ++d) same = static_cast<int64_t>(d) == axis || x[d] == y[d];
    if (!same)
      return node_error(node, "input '", node.inputs[i], "' (", dtype_name(other), " ", shape_str(x),
                        ") cannot be concatenated with ", dtype_name(dtype), " ", shape_str(y), " on axis ", axis);
    y[static_cast<size_t>(axis)] += x[static_cast<size_t>(axis)];
  }
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_cast(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  if (!node.has_attr("to")) return node_error(node, "needs attribute 'to'");
  auto to = dtype_from_onnx(static_cast<int32_t>(node.attr_int("to", 0)));
  if (!to.ok()) return to.status().with_context(node.describe());
  set_out(graph, node, 0, to.value(), x);
  return ok_status();
}

Status shape_slice(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  RN_ASSIGN_OR_RETURN(std::vector<SliceAxis> plan, slice_plan(node, graph, x));
  Shape y;
  for (const SliceAxis& a : plan) y.push_back(a.len);
  set_out(graph, node, 0, dtype, y);
  return ok_status();
}

Status shape_constant_of_shape(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> dims, const_ints(node, graph, 0, "shape"));
  RN_ASSIGN_OR_RETURN(TensorData fill, fill_value(node));
  auto n = checked_numel(dims);
  if (!n.ok()) return n.status().with_context(node.describe());
  set_out(graph, node, 0, fill.dtype, dims);
  return ok_status();
}

Status shape_range(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(RangeParams p, range_params(node, graph));
  set_out(graph, node, 0, p.dtype, {p.count});
  return ok_status();
}

// ---- ai.ravnest gradient ops ----

namespace {

// The shape the gradient of a forward input must have: the one the program already
// declares for the output, else `fallback`; checked by re-running the forward rule.
Shape declared_or(const Node& node, const Graph& graph, size_t i, const Shape& fallback) {
  if (has_output(node, i)) {
    const ValueInfo* info = graph.find_value(node.outputs[i]);
    if (info && info->is_static()) return info->static_shape();
  }
  return fallback;
}

}  // namespace

Status shape_conv_grad_input(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape w, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (dy.size() != 4 || w.size() != 4)
    return node_error(node, "dY ", shape_str(dy), " and W ", shape_str(w), " must be 4-D");
  // Smallest input that gives dY (exact when every stride divides evenly).
  std::vector<int64_t> s = node.attr_ints("strides", {1, 1}), d = node.attr_ints("dilations", {1, 1});
  std::vector<int64_t> p = node.attr_ints("pads", {0, 0, 0, 0});
  if (s.size() != 2 || d.size() != 2 || p.size() != 4) return node_error(node, "strides, dilations, pads malformed");
  Shape minimal = {dy[0], w[1] * node.attr_int("group", 1), (dy[2] - 1) * s[0] - p[0] - p[2] + d[0] * (w[2] - 1) + 1,
                   (dy[3] - 1) * s[1] - p[1] - p[3] + d[1] * (w[3] - 1) + 1};
  Shape dx = declared_or(node, graph, 0, minimal);
  RN_ASSIGN_OR_RETURN(ConvGeometry g, conv_geometry(node, dx, w));
  if (g.out_shape() != dy)
    return node_error(node, "dX ", shape_str(dx), " and W ", shape_str(w), " give a Conv output ",
                      shape_str(g.out_shape()), ", not dY ", shape_str(dy));
  set_out(graph, node, 0, dtype, dx);
  return ok_status();
}

Status shape_conv_grad_weight(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (dy.size() != 4 || x.size() != 4)
    return node_error(node, "dY ", shape_str(dy), " and X ", shape_str(x), " must be 4-D");
  int64_t group = node.attr_int("group", 1);
  if (group <= 0 || x[1] % group != 0) return node_error(node, "group ", group, " does not divide ", x[1], " channels");
  Shape dw = declared_or(node, graph, 0, {});
  if (dw.empty()) {
    std::vector<int64_t> k = node.attr_ints("kernel_shape");
    if (k.size() != 2) return node_error(node, "needs kernel_shape (2 values) or a declared dW shape");
    dw = {dy[1], x[1] / group, k[0], k[1]};
  }
  RN_ASSIGN_OR_RETURN(ConvGeometry g, conv_geometry(node, x, dw));
  if (g.out_shape() != dy)
    return node_error(node, "X ", shape_str(x), " and dW ", shape_str(dw), " give a Conv output ",
                      shape_str(g.out_shape()), ", not dY ", shape_str(dy));
  set_out(graph, node, 0, dtype, dw);
  set_out(graph, node, 1, dtype, {dw[0]});
  return ok_status();
}

Status shape_relu_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape y, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (dy != y) return node_error(node, "dY ", shape_str(dy), " and Y ", shape_str(y), " differ");
  set_out(graph, node, 0, dtype, dy);
  return ok_status();
}

Status shape_maxpool_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dy, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape indices, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 0));
  if (dy != indices || dy.size() != 4)
    return node_error(node, "dY ", shape_str(dy), " and Indices ", shape_str(indices), " must be equal 4-D shapes");
  std::vector<int64_t> k = node.attr_ints("kernel_shape"), s = node.attr_ints("strides", {1, 1});
  std::vector<int64_t> d = node.attr_ints("dilations", {1, 1}), p = node.attr_ints("pads", {0, 0, 0, 0});
  if (k.size() != 2 || s.size() != 2 || d.size() != 2 || p.size() != 4)
    return node_error(node, "kernel_shape, strides, dilations, pads malformed");
  Shape minimal = {dy[0], dy[1], (dy[2] - 1) * s[0] - p[0] - p[2] + d[0] * (k[0] - 1) + 1,
                   (dy[3] - 1) * s[1] - p[1] - p[3] + d[1] * (k[1] - 1) + 1};
  Shape dx = declared_or(node, graph, 0, minimal);
  RN_ASSIGN_OR_RETURN(Shape y, pool_output(node, dx));
  if (y != dy)
    return node_error(node, "dX ", shape_str(dx), " gives a MaxPool output ", shape_str(y), ", not dY ", shape_str(dy),
                      "; declare dX's shape in the program");
  set_out(graph, node, 0, dtype, dx);
  return ok_status();
}

Status shape_softmax_ce_loss_grad(const Node& node, Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape dloss, in_shape(node, graph, 0));
  RN_ASSIGN_OR_RETURN(Shape log_prob, in_shape(node, graph, 1));
  RN_ASSIGN_OR_RETURN(Shape labels, in_shape(node, graph, 2));
  RN_ASSIGN_OR_RETURN(DType dtype, in_dtype(node, graph, 1));
  if (log_prob.size() < 2) return node_error(node, "log_prob must be [N, C, ...], got ", shape_str(log_prob));
  Shape expected = log_prob;
  expected.erase(expected.begin() + 1);
  if (labels != expected)
    return node_error(node, "labels ", shape_str(labels), " do not match log_prob ", shape_str(log_prob));
  std::string reduction = node.attr_string("reduction", "mean");
  if (dloss != (reduction == "none" ? expected : Shape{}))
    return node_error(node, "dloss has shape ", shape_str(dloss), ", expected ",
                      shape_str(reduction == "none" ? expected : Shape{}), " for reduction '", reduction, "'");
  set_out(graph, node, 0, dtype, log_prob);
  return ok_status();
}

}  // namespace ravnest::fe::rules
