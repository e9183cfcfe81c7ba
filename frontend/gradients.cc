// Gradient rules. Conventions: `dY` is the gradient of the node's first output;
// B work targets activations, W work targets parameters (GradBuilder::emit
// decides from the target). Every rule handles the inputs that need a gradient
// and nothing else.
#include "frontend/gradients.h"

#include "frontend/grad_util.h"

namespace ravnest::fe {

Status grad_conv(const Node& node, GradBuilder& b) {
  std::string dy = b.grad(node.outputs[0]);
  const std::string& x = input(node, 0);
  const std::string& w = input(node, 1);
  const std::string& bias = input(node, 2);
  if (wants(b, node, 0)) {
    std::string dx = grad_value(b, x);
    Node n = make_node(node.name + "/grad_input", "ConvGradInput", {dy, w}, {dx}, kRavnestDomain);
    n.attrs = node.attrs;
    b.emit(std::move(n), x);
    b.contribute(x, dx);
  }
  bool want_w = wants(b, node, 1);
  bool want_b = wants(b, node, 2);
  if (want_w || want_b) {
    if (want_b && !want_w)
      return error(Code::kUnsupported, "a trainable Conv bias with a frozen weight is not supported");
    std::string dw = grad_value(b, w);
    std::string db = want_b ? grad_value(b, bias) : "";
    Node n = make_node(node.name + "/grad_weight", "ConvGradWeight", {dy, x}, {dw}, kRavnestDomain);
    if (want_b) n.outputs.push_back(db);
    n.attrs = node.attrs;
    b.emit(std::move(n), w);
    b.contribute(w, dw);
    if (want_b) b.contribute(bias, db);
  }
  return ok_status();
}

Status grad_relu(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  std::string dx = grad_value(b, x);
  b.emit(make_node(node.name + "/grad", "ReluGrad", {b.grad(node.outputs[0]), node.outputs[0]}, {dx}, kRavnestDomain), x);
  b.contribute(x, dx);
  return ok_status();
}

Status grad_maxpool(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  if (node.outputs.size() > 1 && !node.outputs[1].empty() && !b.grad(node.outputs[1]).empty())
    return error(Code::kUnsupported, "a gradient flowing into MaxPool's Indices output is not supported");
  const ValueInfo& y = b.info(node.outputs[0]);
  std::string indices = b.forward_output(node.name, 1, DType::kI64, y.static_shape());
  std::string dx = grad_value(b, x);
  b.emit(make_node(node.name + "/grad", "MaxPoolGrad", {b.grad(node.outputs[0]), indices}, {dx}, kRavnestDomain), x);
  b.contribute(x, dx);
  return ok_status();
}

Status grad_reshape(const Node& node, GradBuilder& b) {
  const std::string& x = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  Shape shape = b.info(x).static_shape();
  std::string target = b.constant("shape", TensorData::from_ints(shape, {static_cast<int64_t>(shape.size())}));
  std::string dx = grad_value(b, x);
  b.emit(make_node(node.name + "/grad", "Reshape", {b.grad(node.outputs[0]), target}, {dx}), x);
  b.contribute(x, dx);
  return ok_status();
}

Status grad_identity(const Node& node, GradBuilder& b) {
  if (wants(b, node, 0)) b.contribute(input(node, 0), b.grad(node.outputs[0]));
  return ok_status();
}

// Y = alpha * op(A) * op(B) + beta * C.
Status grad_gemm(const Node& node, GradBuilder& b) {
  std::string dy = b.grad(node.outputs[0]);
  const std::string& a = input(node, 0);
  const std::string& w = input(node, 1);
  const std::string& c = input(node, 2);
  int64_t trans_a = node.attr_int("transA", 0);
  int64_t trans_b = node.attr_int("transB", 0);
  float alpha = node.attr_float("alpha", 1.0f);
  float beta = node.attr_float("beta", 1.0f);
  auto gemm = [&](const std::string& name, const std::string& lhs, const std::string& rhs, int64_t ta, int64_t tb,
                  const std::string& target) {
    std::string out = grad_value(b, target);
    Node n = make_node(name, "Gemm", {lhs, rhs}, {out});
    n.attrs["transA"] = ta;
    n.attrs["transB"] = tb;
    if (alpha != 1.0f) n.attrs["alpha"] = alpha;
    b.emit(std::move(n), target);
    b.contribute(target, out);
  };
  if (wants(b, node, 0)) {
    // dA = dY op(B)^T, transposed back when A was transposed.
    if (!trans_a) gemm(node.name + "/grad_a", dy, w, 0, 1 - trans_b, a);
    else gemm(node.name + "/grad_a", w, dy, trans_b, 1, a);
  }
  if (wants(b, node, 1)) {
    // dB = op(A)^T dY, transposed back when B was transposed.
    if (!trans_b) gemm(node.name + "/grad_b", a, dy, 1 - trans_a, 0, w);
    else gemm(node.name + "/grad_b", dy, a, 1, trans_a, w);
  }
  if (wants(b, node, 2)) {
    if (beta != 1.0f)
      return error(Code::kUnsupported, "Gemm with beta=", beta, " and a trainable C: only beta=1 is supported");
    b.contribute(c, b.reduce_to_shape(dy, b.info(c).static_shape(), c));
  }
  return ok_status();
}

// Y = A @ B with numpy matmul broadcasting (2-D and batched).
Status grad_matmul(const Node& node, GradBuilder& b) {
  std::string dy = b.grad(node.outputs[0]);
  const std::string& a = input(node, 0);
  const std::string& w = input(node, 1);
  Shape sa = b.info(a).static_shape();
  Shape sw = b.info(w).static_shape();
  Shape sy = b.info(node.outputs[0]).static_shape();
  if (sa.size() < 2 || sw.size() < 2)
    return error(Code::kUnsupported, "MatMul gradient needs inputs of rank >= 2 (got ", shape_str(sa), " and ",
                 shape_str(sw), ")");
  auto transpose_last = [&](const std::string& v, const std::string& target) {
    Shape s = b.info(v).static_shape();
    std::vector<int64_t> perm;
    for (size_t i = 0; i < s.size(); ++i) perm.push_back(static_cast<int64_t>(i));
    std::swap(perm[s.size() - 1], perm[s.size() - 2]);
    Shape st = s;
    std::swap(st[s.size() - 1], st[s.size() - 2]);
    std::string out = b.new_value("t/" + v, b.info(v).dtype, st);
    Node n = make_node(node.name + "/transpose/" + v, "Transpose", {v}, {out});
    n.attrs["perm"] = perm;
    b.emit(std::move(n), target);
    return out;
  };
  auto product = [&](const std::string& name, const std::string& lhs, const std::string& rhs, const Shape& out_shape,
                     const std::string& target) {
    std::string out = b.new_value("mm/" + target, b.info(target).dtype, out_shape);
    b.emit(make_node(name, "MatMul", {lhs, rhs}, {out}), target);
    b.contribute(target, b.reduce_to_shape(out, b.info(target).static_shape(), target));
  };
  if (wants(b, node, 0)) {
    // dA = dY @ B^T, summed over broadcast batch dims.
    Shape out_shape(sy.begin(), sy.end() - 2);
    out_shape.push_back(sy[sy.size() - 2]);
    out_shape.push_back(sw[sw.size() - 2]);
    if (sa.size() == 2 && sw.size() == 2) {
      std::string da = grad_value(b, a);
      Node n = make_node(node.name + "/grad_a", "Gemm", {dy, w}, {da});
      n.attrs["transB"] = int64_t{1};
      b.emit(std::move(n), a);
      b.contribute(a, da);
    } else {
      product(node.name + "/grad_a", dy, transpose_last(w, a), out_shape, a);
    }
  }
  if (wants(b, node, 1)) {
    // dB = A^T @ dY, summed over broadcast batch dims.
    Shape out_shape(sy.begin(), sy.end() - 2);
    out_shape.push_back(sa[sa.size() - 1]);
    out_shape.push_back(sy[sy.size() - 1]);
    if (sa.size() == 2 && sw.size() == 2) {
      std::string dw = grad_value(b, w);
      Node n = make_node(node.name + "/grad_b", "Gemm", {a, dy}, {dw});
      n.attrs["transA"] = int64_t{1};
      b.emit(std::move(n), w);
      b.contribute(w, dw);
    } else {
      product(node.name + "/grad_b", transpose_last(a, w), dy, out_shape, w);
    }
  }
  return ok_status();
}

Status grad_add(const Node& node, GradBuilder& b) {
  std::string dy = b.grad(node.outputs[0]);
  for (size_t i = 0; i < 2; ++i)
    if (wants(b, node, i)) b.contribute(input(node, i), b.reduce_to_shape(dy, b.info(input(node, i)).static_shape(), input(node, i)));
  return ok_status();
}

Status grad_sub(const Node& node, GradBuilder& b) {
  std::string dy = b.grad(node.outputs[0]);
  if (wants(b, node, 0)) b.contribute(input(node, 0), b.reduce_to_shape(dy, b.info(input(node, 0)).static_shape(), input(node, 0)));
  if (wants(b, node, 1))
    return error(Code::kUnsupported, "gradient of Sub's second input needs Neg, which is not supported yet");
  return ok_status();
}

Status grad_softmax_cross_entropy(const Node& node, GradBuilder& b) {
  const std::string& scores = input(node, 0);
  if (!wants(b, node, 0)) return ok_status();
  if (wants(b, node, 2)) return error(Code::kUnsupported, "a trainable class-weight input is not supported");
  const ValueInfo& si = b.info(scores);
  std::string log_prob = b.forward_output(node.name, 1, si.dtype, si.static_shape());
  std::string ds = grad_value(b, scores);
  Node n = make_node(node.name + "/grad", "SoftmaxCrossEntropyLossGrad", {b.grad(node.outputs[0]), log_prob, input(node, 1)},
                     {ds}, kRavnestDomain);
  n.attrs["reduction"] = node.attr_string("reduction", "mean");
  if (node.has_attr("ignore_index")) n.attrs["ignore_index"] = node.attr_int("ignore_index", -100);
  b.emit(std::move(n), scores);
  b.contribute(scores, ds);
  return ok_status();
}

}  // namespace ravnest::fe
