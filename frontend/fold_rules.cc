// Fold rules (see rules.h): compile-time evaluation of the shape-computing ops.
// Each rule runs after the node's shape rule, so the output types it must produce
// are read from graph.values; integer arithmetic is exact and checked, division by
// zero and out-of-range indices are errors naming the node.
#include <cmath>
#include <cstring>

#include "frontend/rule_util.h"
#include "frontend/rules.h"

namespace ravnest::fe::rules {
namespace {

using Outputs = std::vector<TensorData>;

TensorData make_tensor(DType dtype, const Shape& shape) {
  TensorData t;
  t.dtype = dtype;
  t.shape = shape;
  t.bytes.assign(static_cast<size_t>(numel(shape)) * dtype_size(dtype), 0);
  return t;
}

// The output tensor of slot i, typed by the shape rule.
TensorData output_tensor(const Node& node, const Graph& graph, size_t i) {
  const ValueInfo* info = graph.find_value(node.outputs[i]);
  return make_tensor(info->dtype, info->static_shape());
}

const TensorData& input(const Node& node, const Graph& graph, size_t i) {
  return graph.initializers.at(node.inputs[i]);
}

bool is_foldable_type(DType dtype) {
  return dtype != DType::kF16 && dtype != DType::kBF16 && dtype != DType::kUndefined;
}

Status check_types(const Node& node, std::initializer_list<DType> types) {
  for (DType t : types)
    if (!is_foldable_type(t))
      return error(Code::kUnsupported, node.describe(), ": cannot evaluate ", dtype_name(t),
                   " at compile time; export the model in float32");
  return ok_status();
}

int64_t load_int(const TensorData& t, size_t i) {
  switch (t.dtype) {
    case DType::kI64: return t.data<int64_t>()[i];
    case DType::kI32: return t.data<int32_t>()[i];
    case DType::kI8: return t.data<int8_t>()[i];
    case DType::kU8: case DType::kBool: return t.data<uint8_t>()[i];
    case DType::kF32: return static_cast<int64_t>(t.data<float>()[i]);
    case DType::kF64: return static_cast<int64_t>(t.data<double>()[i]);
    default: return 0;
  }
}

double load_double(const TensorData& t, size_t i) {
  switch (t.dtype) {
    case DType::kF32: return t.data<float>()[i];
    case DType::kF64: return t.data<double>()[i];
    default: return static_cast<double>(load_int(t, i));
  }
}

void store_int(TensorData& t, size_t i, int64_t v) {
  switch (t.dtype) {
    case DType::kI64: t.data<int64_t>()[i] = v; break;
    case DType::kI32: t.data<int32_t>()[i] = static_cast<int32_t>(v); break;
    case DType::kI8: t.data<int8_t>()[i] = static_cast<int8_t>(v); break;
    case DType::kU8: t.data<uint8_t>()[i] = static_cast<uint8_t>(v); break;
    case DType::kBool: t.data<uint8_t>()[i] = v != 0; break;
    case DType::kF32: t.data<float>()[i] = static_cast<float>(v); break;
    case DType::kF64: t.data<double>()[i] = static_cast<double>(v); break;
    default: break;
  }
}

void store_double(TensorData& t, size_t i, double v) {
  switch (t.dtype) {
    case DType::kF32: t.data<float>()[i] = static_cast<float>(v); break;
    case DType::kF64: t.data<double>()[i] = v; break;
    case DType::kBool: t.data<uint8_t>()[i] = v != 0; break;
    default: store_int(t, i, static_cast<int64_t>(v)); break;  // callers check the range
  }
}

// Row-major strides of `shape` aligned to an output of rank `rank`, 0 on broadcast dims.
std::vector<int64_t> broadcast_strides(const Shape& shape, size_t rank) {
  std::vector<int64_t> strides(rank, 0);
  int64_t stride = 1;
  for (size_t k = 0; k < shape.size(); ++k) {
    size_t dim = shape.size() - 1 - k;
    size_t out_dim = rank - 1 - k;
    strides[out_dim] = shape[dim] == 1 ? 0 : stride;
    stride *= shape[dim];
  }
  return strides;
}

// Calls fn(flat output index, offset in a, offset in b) for every output element.
template <typename Fn>
void for_each_broadcast(const Shape& out, const Shape& a, const Shape& b, Fn fn) {
  std::vector<int64_t> sa = broadcast_strides(a, out.size()), sb = broadcast_strides(b, out.size());
  std::vector<int64_t> index(out.size(), 0);
  int64_t total = numel(out), oa = 0, ob = 0;
  for (int64_t i = 0; i < total; ++i) {
    fn(static_cast<size_t>(i), static_cast<size_t>(oa), static_cast<size_t>(ob));
    for (size_t d = out.size(); d-- > 0;) {  // odometer increment
      ++index[d];
      oa += sa[d];
      ob += sb[d];
      if (index[d] < out[d]) break;
      oa -= sa[d] * index[d];
      ob -= sb[d] * index[d];
      index[d] = 0;
    }
  }
}

Result<int64_t> int_op(const Node& node, int64_t a, int64_t b) {
  int64_t r = 0;
  bool overflow = false;
  if (node.op == "Add") overflow = __builtin_add_overflow(a, b, &r);
  else if (node.op == "Sub") overflow = __builtin_sub_overflow(a, b, &r);
  else if (node.op == "Mul") overflow = __builtin_mul_overflow(a, b, &r);
  else {
    if (b == 0) return node_error(node, "integer division by zero while folding constants");
    overflow = a == INT64_MIN && b == -1;
    r = overflow ? 0 : a / b;  // ONNX integer Div truncates toward zero
  }
  if (overflow) return node_error(node, "integer overflow while folding constants (", a, ", ", b, ")");
  return r;
}

double float_op(const std::string& op, double a, double b) {
  if (op == "Add") return a + b;
  if (op == "Sub") return a - b;
  if (op == "Mul") return a * b;
  return a / b;
}

}  // namespace

Result<Outputs> fold_copy(const Node& node, const Graph& graph) {
  TensorData out = output_tensor(node, graph, 0);
  const TensorData& in = input(node, graph, 0);
  if (in.bytes.size() != out.bytes.size()) return node_error(node, "folded size mismatch");
  out.bytes = in.bytes;
  return Outputs{std::move(out)};
}

Result<Outputs> fold_constant(const Node& node, const Graph& graph) {
  RN_ASSIGN_OR_RETURN(TensorData value, constant_value(node));
  return Outputs{std::move(value)};
}

Result<Outputs> fold_shape(const Node& node, const Graph& graph) {
  RN_ASSIGN_OR_RETURN(Shape x, in_shape(node, graph, 0));
  auto [begin, end] = shape_op_range(node, static_cast<int64_t>(x.size()));
  std::vector<int64_t> dims(x.begin() + begin, x.begin() + end);
  return Outputs{TensorData::from_ints(dims, {static_cast<int64_t>(dims.size())})};
}

Result<Outputs> fold_gather(const Node& node, const Graph& graph) {
  const TensorData& data = input(node, graph, 0);
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> indices, input(node, graph, 1).as_ints());
  RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, node.attr_int("axis", 0), static_cast<int64_t>(data.shape.size())));
  TensorData out = output_tensor(node, graph, 0);
  int64_t dim = data.shape[static_cast<size_t>(axis)];
  int64_t outer = 1, inner = static_cast<int64_t>(dtype_size(data.dtype));
  for (int64_t d = 0; d < axis; ++d) outer *= data.shape[static_cast<size_t>(d)];
  for (size_t d = static_cast<size_t>(axis) + 1; d < data.shape.size(); ++d) inner *= data.shape[d];
  uint8_t* dst = out.bytes.data();
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t index : indices) {
      if (index < -dim || index >= dim) return node_error(node, "index ", index, " is out of range for dim ", dim);
      int64_t i = index < 0 ? index + dim : index;
      std::memcpy(dst, data.bytes.data() + (o * dim + i) * inner, static_cast<size_t>(inner));
      dst += inner;
    }
  }
  return Outputs{std::move(out)};
}

Result<Outputs> fold_concat(const Node& node, const Graph& graph) {
  TensorData out = output_tensor(node, graph, 0);
  RN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, node.attr_int("axis", 0), static_cast<int64_t>(out.shape.size())));
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= out.shape[static_cast<size_t>(d)];
  uint8_t* dst = out.bytes.data();
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const TensorData& in = input(node, graph, i);
      size_t block = in.bytes.size() / static_cast<size_t>(outer);  // this input's slab per outer index
      std::memcpy(dst, in.bytes.data() + static_cast<size_t>(o) * block, block);
      dst += block;
    }
  }
  return Outputs{std::move(out)};
}

Result<Outputs> fold_cast(const Node& node, const Graph& graph) {
  const TensorData& in = input(node, graph, 0);
  TensorData out = output_tensor(node, graph, 0);
  RN_RETURN_IF_ERROR(check_types(node, {in.dtype, out.dtype}));
  for (size_t i = 0; i < static_cast<size_t>(in.numel()); ++i) {
    if (!is_float(in.dtype)) {
      store_int(out, i, load_int(in, i));
      continue;
    }
    double v = load_double(in, i);
    if (!is_float(out.dtype) && out.dtype != DType::kBool && !(std::fabs(v) < 9.2e18))
      return node_error(node, "cannot cast ", v, " to ", dtype_name(out.dtype));
    store_double(out, i, v);
  }
  return Outputs{std::move(out)};
}

Result<Outputs> fold_slice(const Node& node, const Graph& graph) {
  const TensorData& data = input(node, graph, 0);
  RN_ASSIGN_OR_RETURN(std::vector<SliceAxis> plan, slice_plan(node, graph, data.shape));
  TensorData out = output_tensor(node, graph, 0);
  size_t width = dtype_size(data.dtype), rank = plan.size();
  std::vector<int64_t> strides(rank, 1), index(rank, 0);
  for (size_t d = rank; d-- > 1;) strides[d - 1] = strides[d] * data.shape[d];
  int64_t total = out.numel();
  for (int64_t i = 0; i < total; ++i) {
    int64_t src = 0;
    for (size_t d = 0; d < rank; ++d) src += (plan[d].start + index[d] * plan[d].step) * strides[d];
    std::memcpy(out.bytes.data() + static_cast<size_t>(i) * width, data.bytes.data() + static_cast<size_t>(src) * width,
                width);
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < plan[d].len) break;
      index[d] = 0;
    }
  }
  return Outputs{std::move(out)};
}

Result<Outputs> fold_constant_of_shape(const Node& node, const Graph& graph) {
  RN_ASSIGN_OR_RETURN(TensorData fill, fill_value(node));
  TensorData out = output_tensor(node, graph, 0);
  size_t width = dtype_size(fill.dtype);
  for (size_t i = 0; i < static_cast<size_t>(out.numel()); ++i)
    std::memcpy(out.bytes.data() + i * width, fill.bytes.data(), width);
  return Outputs{std::move(out)};
}

Result<Outputs> fold_range(const Node& node, const Graph& graph) {
  RN_ASSIGN_OR_RETURN(RangeParams p, range_params(node, graph));
  TensorData out = output_tensor(node, graph, 0);
  RN_RETURN_IF_ERROR(check_types(node, {out.dtype}));
  for (int64_t i = 0; i < p.count; ++i) {
    if (is_float(out.dtype)) store_double(out, static_cast<size_t>(i), p.start + static_cast<double>(i) * p.delta);
    else store_int(out, static_cast<size_t>(i), static_cast<int64_t>(p.start) + i * static_cast<int64_t>(p.delta));
  }
  return Outputs{std::move(out)};
}

Result<Outputs> fold_binary(const Node& node, const Graph& graph) {
  const TensorData& a = input(node, graph, 0);
  const TensorData& b = input(node, graph, 1);
  TensorData out = output_tensor(node, graph, 0);
  RN_RETURN_IF_ERROR(check_types(node, {a.dtype, b.dtype}));
  Status status;
  for_each_broadcast(out.shape, a.shape, b.shape, [&](size_t i, size_t ia, size_t ib) {
    if (!status.ok()) return;
    if (is_float(out.dtype)) {
      store_double(out, i, float_op(node.op, load_double(a, ia), load_double(b, ib)));
      return;
    }
    auto r = int_op(node, load_int(a, ia), load_int(b, ib));
    if (!r.ok()) status = r.status();
    else store_int(out, i, r.value());
  });
  RN_RETURN_IF_ERROR(status);
  return Outputs{std::move(out)};
}

}  // namespace ravnest::fe::rules
