// Rules of the math family (frontend/ops/math.cc) at their edges: dtypes and
// broadcasting of Equal/Where/Pow, ReduceMean's axes as attribute or input,
// Softmax's axis, the ai.ravnest gradient ops' shape rules, folding of constant
// inputs, and the shape of the gradient graphs (which ops, B or W).
#include <gtest/gtest.h>

#include <cmath>

#include "frontend/autodiff.h"
#include "frontend/op_table.h"

namespace ravnest::fe {
namespace {

using Ints = std::vector<int64_t>;

struct Net {
  Graph graph;

  explicit Net(int64_t opset = 17) {
    graph.name = "t";
    graph.opset = opset;
  }
  Net& in(const std::string& name, const Shape& shape, DType dtype = DType::kF32) {
    graph.inputs.push_back(name);
    graph.set_value(ValueInfo::of(name, dtype, shape));
    return *this;
  }
  Net& param(const std::string& name, const Shape& shape) {
    graph.initializers[name] = TensorData::from_floats(std::vector<float>(static_cast<size_t>(numel(shape)), 1.0f), shape);
    graph.parameters.insert(name);
    graph.set_value(ValueInfo::of(name, DType::kF32, shape));
    return *this;
  }
  Net& constant(const std::string& name, const TensorData& t) {
    graph.initializers[name] = t;
    graph.set_value(ValueInfo::of(name, t.dtype, t.shape));
    return *this;
  }
  // Adds the node and runs its shape rule.
  Status node(const std::string& op, std::vector<std::string> inputs, std::vector<std::string> outputs,
              std::map<std::string, AttrValue> attrs = {}, const std::string& domain = "") {
    Node n;
    n.name = op + std::to_string(graph.nodes.size());
    n.op = op;
    n.domain = domain;
    n.inputs = std::move(inputs);
    n.outputs = std::move(outputs);
    n.attrs = std::move(attrs);
    const OpDef* def = find_op(domain, op, static_cast<int>(graph.opset));
    if (!def) return error(Code::kUnsupported, op, " is not in the table");
    RN_RETURN_IF_ERROR(def->shape(n, graph));
    graph.nodes.push_back(std::move(n));
    return ok_status();
  }
  Shape shape(const std::string& v) const { return graph.find_value(v)->static_shape(); }
  DType dtype(const std::string& v) const { return graph.find_value(v)->dtype; }
};

TensorData ints(const Ints& v) { return TensorData::from_ints(v, {static_cast<int64_t>(v.size())}); }

TEST(MathRules, EqualGivesBoolAndBroadcasts) {
  Net n;
  n.in("a", {2, 1, 4}, DType::kI64).in("b", {3, 1}, DType::kI64).in("c", {4});
  ASSERT_TRUE(n.node("Equal", {"a", "b"}, {"y"}).ok());
  EXPECT_EQ(n.shape("y"), (Shape{2, 3, 4}));
  EXPECT_EQ(n.dtype("y"), DType::kBool);
  Status mixed = n.node("Equal", {"a", "c"}, {"z"});
  EXPECT_FALSE(mixed.ok());
  EXPECT_NE(mixed.message().find("different element types"), std::string::npos) << mixed.message();
}

TEST(MathRules, WhereNeedsBoolConditionAndBroadcastsAllThree) {
  Net n;
  n.in("c", {4, 4}, DType::kBool).in("f", {}).in("x", {2, 3, 4, 4}).in("m", {4, 4});
  ASSERT_TRUE(n.node("Where", {"c", "f", "x"}, {"y"}).ok());
  EXPECT_EQ(n.shape("y"), (Shape{2, 3, 4, 4}));
  EXPECT_EQ(n.dtype("y"), DType::kF32);
  Status not_bool = n.node("Where", {"m", "f", "x"}, {"z"});
  EXPECT_FALSE(not_bool.ok());
  EXPECT_NE(not_bool.message().find("condition must be bool"), std::string::npos) << not_bool.message();
  n.in("c3", {3, 1, 1, 1}, DType::kBool);
  EXPECT_FALSE(n.node("Where", {"c3", "f", "x"}, {"w"}).ok());  // 3 vs 2 in dim 0
}

TEST(MathRules, PowTakesAnIntegerExponentAndKeepsTheBaseType) {
  Net n;
  n.in("x", {2, 5}).constant("e", TensorData::from_ints({3}, {}));
  ASSERT_TRUE(n.node("Pow", {"x", "e"}, {"y"}).ok());
  EXPECT_EQ(n.shape("y"), (Shape{2, 5}));
  EXPECT_EQ(n.dtype("y"), DType::kF32);
}

TEST(MathRules, ReduceMeanAxesFromAttributeOrInput) {
  Net n17(17);
  n17.in("x", {2, 3, 8});
  ASSERT_TRUE(n17.node("ReduceMean", {"x"}, {"y"}, {{"axes", Ints{-1}}}).ok());
  EXPECT_EQ(n17.shape("y"), (Shape{2, 3, 1}));
  ASSERT_TRUE(n17.node("ReduceMean", {"x"}, {"z"}, {{"axes", Ints{0, 2}}, {"keepdims", int64_t{0}}}).ok());
  EXPECT_EQ(n17.shape("z"), (Shape{3}));
  ASSERT_TRUE(n17.node("ReduceMean", {"x"}, {"all"}, {{"keepdims", int64_t{0}}}).ok());
  EXPECT_EQ(n17.shape("all"), Shape{});
  EXPECT_FALSE(n17.node("ReduceMean", {"x"}, {"bad"}, {{"axes", Ints{3}}}).ok());
  Net n18(18);
  n18.in("x", {2, 3, 8}).constant("axes", ints({1}));
  ASSERT_TRUE(n18.node("ReduceMean", {"x", "axes"}, {"y"}).ok());
  EXPECT_EQ(n18.shape("y"), (Shape{2, 1, 8}));
}

TEST(MathRules, SoftmaxAxisIsChecked) {
  Net n;
  n.in("x", {2, 4, 4});
  ASSERT_TRUE(n.node("Softmax", {"x"}, {"y"}, {{"axis", int64_t{-3}}}).ok());
  Status bad = n.node("Softmax", {"x"}, {"z"}, {{"axis", int64_t{3}}});
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("axis 3"), std::string::npos) << bad.message();
}

TEST(MathRules, GradientOpShapes) {
  Net n;
  n.in("dy", {2, 3, 4}).in("x", {3, 1}).in("e", {4}).in("k", {2, 1, 4});
  ASSERT_TRUE(n.node("PowGrad", {"dy", "x", "k"}, {"dx"}, {}, kRavnestDomain).ok());
  EXPECT_EQ(n.shape("dx"), (Shape{2, 3, 4}));
  EXPECT_FALSE(n.node("PowGrad", {"dy", "x", "x"}, {"bad"}, {}, kRavnestDomain).ok());  // X, E give 3x1, not dY's
  ASSERT_TRUE(n.node("ReduceGrad", {"k"}, {"g"}, {{"shape", Ints{2, 3, 4}}, {"scale", 0.5f}}, kRavnestDomain).ok());
  EXPECT_EQ(n.shape("g"), (Shape{2, 3, 4}));
  EXPECT_FALSE(n.node("ReduceGrad", {"e"}, {"g2"}, {{"shape", Ints{2, 3, 4}}}, kRavnestDomain).ok());  // rank differs
  ASSERT_TRUE(n.node("SoftmaxGrad", {"dy", "dy"}, {"ds"}, {{"axis", int64_t{1}}}, kRavnestDomain).ok());
  EXPECT_FALSE(n.node("SoftmaxGrad", {"dy", "dy"}, {"ds2"}, {{"axis", int64_t{5}}}, kRavnestDomain).ok());
}

TEST(MathRules, ConstantInputsFold) {
  Net n;
  n.constant("m", TensorData::from_floats({1, 0, 1, 1}, {2, 2})).constant("zero", TensorData::from_floats({0}, {}));
  ASSERT_TRUE(n.node("Equal", {"m", "zero"}, {"mask"}).ok());
  ASSERT_TRUE(n.node("Sqrt", {"m"}, {"r"}).ok());
  for (const Node& node : n.graph.nodes) {
    const OpDef* def = find_op("", node.op, 17);
    ASSERT_TRUE(def->foldable) << node.op;
    auto out = def->fold(node, n.graph);
    ASSERT_TRUE(out.ok()) << out.status().message();
    ASSERT_EQ((*out)[0].dtype, n.dtype(node.outputs[0]));
    if (node.op == "Equal") {
      std::vector<double> got = (*out)[0].as_doubles();
      EXPECT_EQ(got, (std::vector<double>{0, 1, 0, 0}));
    }
  }
}

// The ops and B/W tags of the gradient of a one-node graph.
struct Backward {
  std::vector<std::string> ops;
  std::vector<Work> work;
  BackwardGraph graph;
};

Backward backward_of(Net& n, const std::string& out, std::set<std::string> params, std::set<std::string> inputs) {
  BackwardRequest request;
  request.seeds = {out};
  request.params = std::move(params);
  request.inputs_needing_grad = std::move(inputs);
  auto bg = build_backward(n.graph, request);
  EXPECT_TRUE(bg.ok()) << bg.status().message();
  Backward b;
  if (!bg.ok()) return b;
  b.graph = *bg;
  for (size_t i = 0; i < bg->nodes.size(); ++i) {
    b.ops.push_back(bg->nodes[i].op);
    b.work.push_back(bg->work[i]);
  }
  return b;
}

TEST(MathGradients, MulSplitsBAndWAndReducesTheBroadcastParameter) {
  Net n;
  n.in("x", {4, 5}).param("w", {5});
  ASSERT_TRUE(n.node("Mul", {"x", "w"}, {"y"}).ok());
  Backward b = backward_of(n, "y", {"w"}, {"x"});
  ASSERT_EQ(b.ops, (std::vector<std::string>{"Mul", "Mul", "ReduceSum", "Reshape"}));
  EXPECT_EQ(b.work, (std::vector<Work>{Work::kB, Work::kW, Work::kW, Work::kW}));
}

TEST(MathGradients, SubNegatesTheSecondInputAfterReducing) {
  Net n;
  n.in("a", {3, 4}).in("b", {3, 1});
  ASSERT_TRUE(n.node("Sub", {"a", "b"}, {"y"}).ok());
  Backward b = backward_of(n, "y", {}, {"a", "b"});
  ASSERT_EQ(b.ops.size(), 3u);
  EXPECT_EQ(b.ops[0], "ReduceSum");
  EXPECT_EQ(b.ops[1], "Neg");
  EXPECT_EQ(b.graph.values.at(b.graph.nodes[1].outputs[0]).static_shape(), (Shape{3, 1}));
}

TEST(MathGradients, ReduceMeanBroadcastsBackWithOneOverCount) {
  Net n;
  n.in("x", {2, 3, 8});
  ASSERT_TRUE(n.node("ReduceMean", {"x"}, {"y"}, {{"axes", Ints{-1}}, {"keepdims", int64_t{0}}}).ok());
  Backward b = backward_of(n, "y", {}, {"x"});
  ASSERT_EQ(b.ops, (std::vector<std::string>{"Reshape", "ReduceGrad"}));
  const Node& g = b.graph.nodes[1];
  EXPECT_FLOAT_EQ(g.attr_float("scale", 0), 1.0f / 8);
  EXPECT_EQ(g.attr_ints("shape"), (Ints{2, 3, 8}));
}

TEST(MathGradients, EqualIsNeverDifferentiatedAndWhereRoutesByCondition) {
  Net n;
  n.in("x", {2, 4, 4}).constant("tri", TensorData::from_floats(std::vector<float>(16, 1.0f), {4, 4}));
  n.constant("zero", TensorData::from_floats({0}, {})).constant("fill", TensorData::from_floats({-1e9f}, {}));
  ASSERT_TRUE(n.node("Equal", {"tri", "zero"}, {"mask"}).ok());
  ASSERT_TRUE(n.node("Where", {"mask", "fill", "x"}, {"y"}).ok());
  ASSERT_TRUE(n.node("Softmax", {"y"}, {"p"}).ok());
  Backward b = backward_of(n, "p", {}, {"x"});
  ASSERT_EQ(b.ops, (std::vector<std::string>{"SoftmaxGrad", "Where"}));
  EXPECT_EQ(b.graph.nodes[1].inputs[0], "mask");
  EXPECT_EQ(b.graph.nodes[1].inputs[2], b.graph.nodes[0].outputs[0]);  // dX = Where(mask, 0, dY)
}

}  // namespace
}  // namespace ravnest::fe
