// The op table: shape rules at edge cases (strides, dilations, groups, ceil_mode,
// broadcasting, reshape 0/-1), gradient-op shapes, fold rules, and the table's own
// invariants.
#include "frontend/op_table.h"

#include <gtest/gtest.h>

#include <climits>

#include "frontend/passes.h"

namespace ravnest::fe {
namespace {

// A one-node graph over static float inputs (and optional constant inputs).
struct OneNode {
  Graph graph;
  Node node;

  OneNode(const std::string& op, std::string domain = "") {
    graph.name = "t";
    graph.opset = 17;
    node.name = "n";
    node.op = op;
    node.domain = std::move(domain);
  }
  OneNode& in(const std::string& name, const Shape& shape, DType dtype = DType::kF32) {
    graph.inputs.push_back(name);
    graph.set_value(ValueInfo::of(name, dtype, shape));
    node.inputs.push_back(name);
    return *this;
  }
  OneNode& constant(const std::string& name, const TensorData& t) {
    graph.initializers[name] = t;
    graph.set_value(ValueInfo::of(name, t.dtype, t.shape));
    node.inputs.push_back(name);
    return *this;
  }
  OneNode& out(const std::string& name) {
    node.outputs.push_back(name);
    return *this;
  }
  OneNode& attr(const std::string& key, AttrValue value) {
    node.attrs[key] = std::move(value);
    return *this;
  }
  // Runs the shape rule; returns the shape of output i.
  Result<Shape> infer(size_t i = 0) {
    const OpDef* def = find_op(node.domain, node.op, 17);
    if (!def) return error(Code::kUnsupported, node.op, " missing from the table");
    RN_RETURN_IF_ERROR(def->shape(node, graph));
    const ValueInfo* info = graph.find_value(node.outputs[i]);
    if (!info || !info->is_static()) return error(Code::kInternal, "output not typed");
    return info->static_shape();
  }
  DType dtype(size_t i = 0) const { return graph.find_value(node.outputs[i])->dtype; }
};

using Ints = std::vector<int64_t>;

void expect_shape(Result<Shape> result, const Shape& expected) {
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  EXPECT_EQ(result.value(), expected);
}

void expect_fails(Result<Shape> result, const std::string& part) {
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(part), std::string::npos) << result.status().message();
  EXPECT_NE(result.status().message().find("'n'"), std::string::npos) << "error must name the node";
}

TEST(OpTable, EveryOpHasShapeAndCostRuleAndFoldIffFoldable) {
  for (const OpDef& def : all_ops()) {
    EXPECT_TRUE(static_cast<bool>(def.shape)) << def.op;
    EXPECT_TRUE(static_cast<bool>(def.cost)) << def.op;
    EXPECT_EQ(def.foldable, static_cast<bool>(def.fold)) << def.op;
  }
  for (const char* op : {"Conv", "Relu", "MaxPool", "Flatten", "Reshape", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div",
                         "Identity", "Transpose", "ReduceSum", "Sum", "SoftmaxCrossEntropyLoss", "Softmax", "Constant",
                         "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "ConstantOfShape",
                         "Range"})
    EXPECT_NE(find_op("", op, 17), nullptr) << op;
  for (const char* op : {"ConvGradInput", "ConvGradWeight", "ReluGrad", "MaxPoolGrad", "SoftmaxCrossEntropyLossGrad",
                         "SGD"})
    EXPECT_NE(find_op(kRavnestDomain, op, 17), nullptr) << op;
  EXPECT_EQ(find_op("", "Conv", 12), nullptr);
  EXPECT_EQ(find_op("", "Conv", 19), nullptr);
  EXPECT_NE(find_op("ai.onnx", "Conv", 13), nullptr);
}

TEST(OpTable, CheckOpExplainsOpsetRange) {
  Node node;
  node.name = "c";
  node.op = "Conv";
  Status status = check_op(node, 11);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), Code::kUnsupported);
  EXPECT_NE(status.message().find("(opset 11) (supported in opsets 13 to 18)"), std::string::npos)
      << status.message();
}

TEST(ShapeRules, ConvStridesDilationsPadsGroups) {
  OneNode t("Conv");
  t.in("x", {2, 8, 15, 17}).in("w", {12, 4, 3, 3}).in("b", {12}).out("y");
  t.attr("group", int64_t{2}).attr("strides", Ints{2, 1}).attr("dilations", Ints{1, 2}).attr("pads", Ints{1, 0, 1, 2});
  // H: (15+2-3)/2+1 = 8; W: (17+2-(2*2+1))/1+1 = 15
  expect_shape(t.infer(), {2, 12, 8, 15});
  OpCost cost = t.graph.values.count("y") ? find_op("", "Conv", 17)->cost(t.node, t.graph) : OpCost{};
  double outputs = 2.0 * 12 * 8 * 15;
  EXPECT_DOUBLE_EQ(cost.flops, 2 * outputs * 4 * 9 + outputs);
}

TEST(ShapeRules, ConvRejectsBadGroupsAndAutoPad) {
  OneNode t("Conv");
  t.in("x", {1, 6, 8, 8}).in("w", {4, 4, 3, 3}).out("y").attr("group", int64_t{2});
  expect_fails(t.infer(), "group 2 does not fit input channels 6");
  OneNode u("Conv");
  u.in("x", {1, 4, 8, 8}).in("w", {4, 4, 3, 3}).out("y").attr("auto_pad", std::string("SAME_UPPER"));
  auto r = u.infer();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnsupported);
  EXPECT_NE(r.status().message().find("auto_pad 'SAME_UPPER'"), std::string::npos);
}

TEST(ShapeRules, MaxPoolCeilModeAndIndices) {
  OneNode floor_mode("MaxPool");
  floor_mode.in("x", {1, 3, 5, 5}).out("y").out("idx").attr("kernel_shape", Ints{2, 2}).attr("strides", Ints{2, 2});
  expect_shape(floor_mode.infer(0), {1, 3, 2, 2});
  expect_shape(floor_mode.infer(1), {1, 3, 2, 2});
  EXPECT_EQ(floor_mode.dtype(1), DType::kI64);
  OneNode ceil_mode = floor_mode;
  ceil_mode.attr("ceil_mode", int64_t{1});
  expect_shape(ceil_mode.infer(), {1, 3, 3, 3});
  // Pads 1 + ceil: (5+2-2)/2 rounds up to a 4th window, which would start in the right padding: dropped.
  OneNode padded("MaxPool");
  padded.in("x", {1, 1, 5, 5}).out("y").attr("kernel_shape", Ints{2, 2}).attr("strides", Ints{2, 2});
  padded.attr("pads", Ints{1, 1, 1, 1}).attr("ceil_mode", int64_t{1});
  expect_shape(padded.infer(), {1, 1, 3, 3});
}

TEST(ShapeRules, ReshapeZeroAndMinusOne) {
  OneNode t("Reshape");
  t.in("x", {2, 3, 4}).constant("s", TensorData::from_ints({0, -1}, {2})).out("y");
  expect_shape(t.infer(), {2, 12});
  OneNode bad("Reshape");
  bad.in("x", {2, 3, 4}).constant("s", TensorData::from_ints({5, -1}, {2})).out("y");
  expect_fails(bad.infer(), "cannot reshape 2x3x4");
  OneNode dynamic("Reshape");
  dynamic.in("x", {2, 3, 4}).in("s", {2}, DType::kI64).out("y");
  expect_fails(dynamic.infer(), "not a compile-time constant");
}

TEST(ShapeRules, MatMulBroadcastsBatchDims) {
  OneNode t("MatMul");
  t.in("a", {2, 1, 3, 4}).in("b", {5, 4, 6}).out("y");
  expect_shape(t.infer(), {2, 5, 3, 6});
  OneNode vec("MatMul");
  vec.in("a", {4}).in("b", {3, 4, 6}).out("y");
  expect_shape(vec.infer(), {3, 6});
  OneNode bad("MatMul");
  bad.in("a", {2, 3}).in("b", {4, 5}).out("y");
  expect_fails(bad.infer(), "inner dims differ");
}

TEST(ShapeRules, GemmTransposesAndChecksBias) {
  OneNode t("Gemm");
  t.in("a", {64, 3136}).in("w", {128, 3136}).in("c", {128}).out("y").attr("transB", int64_t{1});
  expect_shape(t.infer(), {64, 128});
  OpCost cost = find_op("", "Gemm", 17)->cost(t.node, t.graph);
  EXPECT_DOUBLE_EQ(cost.flops, 2.0 * 64 * 128 * 3136 + 64 * 128);
  EXPECT_DOUBLE_EQ(cost.backward_input_flops, 2.0 * 64 * 128 * 3136);
  OneNode bad("Gemm");
  bad.in("a", {64, 3136}).in("w", {128, 3136}).in("c", {7}).out("y").attr("transB", int64_t{1});
  expect_fails(bad.infer(), "does not broadcast");
}

TEST(ShapeRules, EltwiseBroadcastingAndErrors) {
  OneNode t("Add");
  t.in("a", {8, 1, 5}).in("b", {3, 1}).out("y");
  expect_shape(t.infer(), {8, 3, 5});
  OneNode bad("Mul");
  bad.in("a", {8, 4}).in("b", {3}).out("y");
  expect_fails(bad.infer(), "shapes 8x4 and 3 do not broadcast");
  OneNode sum("Sum");
  sum.in("a", {2, 3}).in("b", {2, 3}).in("c", {2, 3}).out("y");
  expect_shape(sum.infer(), {2, 3});
}

TEST(ShapeRules, ReduceSumTransposeFlattenSoftmax) {
  OneNode r("ReduceSum");
  r.in("x", {4, 5, 6}).constant("axes", TensorData::from_ints({0, -1}, {2})).out("y").attr("keepdims", int64_t{0});
  expect_shape(r.infer(), {5});
  OneNode keep("ReduceSum");
  keep.in("x", {4, 5, 6}).constant("axes", TensorData::from_ints({1}, {1})).out("y");
  expect_shape(keep.infer(), {4, 1, 6});
  OneNode tr("Transpose");
  tr.in("x", {2, 3, 4}).out("y").attr("perm", Ints{1, 2, 0});
  expect_shape(tr.infer(), {3, 4, 2});
  OneNode fl("Flatten");
  fl.in("x", {2, 3, 4, 5}).out("y").attr("axis", int64_t{2});
  expect_shape(fl.infer(), {6, 20});
  OneNode sm("Softmax");
  sm.in("x", {2, 10}).out("y");
  expect_shape(sm.infer(), {2, 10});
}

TEST(ShapeRules, SoftmaxCrossEntropyLossReductions) {
  OneNode mean("SoftmaxCrossEntropyLoss");
  mean.in("s", {64, 10}).in("l", {64}, DType::kI64).out("loss").out("log_prob");
  expect_shape(mean.infer(0), {});
  expect_shape(mean.infer(1), {64, 10});
  OneNode none = mean;
  none.attr("reduction", std::string("none"));
  expect_shape(none.infer(0), {64});
  OneNode bad("SoftmaxCrossEntropyLoss");
  bad.in("s", {64, 10}).in("l", {32}, DType::kI64).out("loss");
  expect_fails(bad.infer(), "labels have shape 32");
}

TEST(ShapeRules, GradientOpsShapedLikeForwardOperands) {
  // Conv 1x3x9x9 * 8x3x3x3, stride 2, pad 1 -> 1x8x5x5. dX: the declared input shape.
  OneNode gi("ConvGradInput", kRavnestDomain);
  gi.in("dy", {1, 8, 5, 5}).in("w", {8, 3, 3, 3}).out("dx").attr("strides", Ints{2, 2}).attr("pads", Ints{1, 1, 1, 1});
  expect_shape(gi.infer(), {1, 3, 9, 9});
  gi.graph.set_value(ValueInfo::of("dx", DType::kF32, {1, 3, 10, 10}));  // also gives 5x5: declared shape wins
  expect_shape(gi.infer(), {1, 3, 10, 10});
  gi.graph.set_value(ValueInfo::of("dx", DType::kF32, {1, 3, 20, 20}));
  expect_fails(gi.infer(), "not dY 1x8x5x5");

  OneNode gw("ConvGradWeight", kRavnestDomain);
  gw.in("dy", {1, 8, 5, 5}).in("x", {1, 3, 9, 9}).out("dw").out("db");
  gw.attr("strides", Ints{2, 2}).attr("pads", Ints{1, 1, 1, 1}).attr("kernel_shape", Ints{3, 3});
  expect_shape(gw.infer(0), {8, 3, 3, 3});
  expect_shape(gw.infer(1), {8});

  OneNode mp("MaxPoolGrad", kRavnestDomain);
  mp.in("dy", {2, 4, 3, 3}).in("idx", {2, 4, 3, 3}, DType::kI64).out("dx");
  mp.attr("kernel_shape", Ints{2, 2}).attr("strides", Ints{2, 2});
  mp.graph.set_value(ValueInfo::of("dx", DType::kF32, {2, 4, 7, 7}));
  expect_shape(mp.infer(), {2, 4, 7, 7});

  OneNode relu("ReluGrad", kRavnestDomain);
  relu.in("dy", {2, 5}).in("y", {2, 5}).out("dx");
  expect_shape(relu.infer(), {2, 5});

  OneNode ce("SoftmaxCrossEntropyLossGrad", kRavnestDomain);
  ce.in("dloss", {}).in("log_prob", {64, 10}).in("labels", {64}, DType::kI64).out("ds");
  expect_shape(ce.infer(), {64, 10});

  OneNode sgd("SGD", kRavnestDomain);
  sgd.in("p", {10, 4}).in("g", {10, 4}).in("v", {4, 10}).in("lr", {});
  const OpDef* def = find_op(kRavnestDomain, "SGD", 17);
  Status status = def->shape(sgd.node, sgd.graph);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("input 'v' has shape 4x10"), std::string::npos) << status.message();
}

// fold_constants on IR graphs built directly: values the fold rules compute.
TEST(FoldRules, SliceGatherSqueezeConcatCastDiv) {
  Graph g;
  g.name = "fold";
  g.opset = 17;
  auto constant = [&](const std::string& name, const TensorData& t) {
    g.initializers[name] = t;
    g.set_value(ValueInfo::of(name, t.dtype, t.shape));
  };
  auto node = [&](const std::string& op, std::vector<std::string> in, std::string out,
                  std::map<std::string, AttrValue> attrs = {}) {
    Node n;
    n.name = op + "_" + out;
    n.op = op;
    n.inputs = std::move(in);
    n.outputs = {out};
    n.attrs = std::move(attrs);
    g.nodes.push_back(n);
  };
  constant("data", TensorData::from_ints({10, 11, 12, 13, 14, 15}, {2, 3}));
  constant("starts", TensorData::from_ints({-1}, {1}));
  constant("ends", TensorData::from_ints({INT64_MIN}, {1}));
  constant("axes", TensorData::from_ints({1}, {1}));
  constant("steps", TensorData::from_ints({-2}, {1}));
  node("Slice", {"data", "starts", "ends", "axes", "steps"}, "sliced");  // columns 2, 0 reversed
  constant("idx", TensorData::from_ints({-1}, {1}));
  node("Gather", {"data", "idx"}, "row", {{"axis", int64_t{0}}});  // [[13,14,15]]
  constant("sq_axes", TensorData::from_ints({0}, {1}));
  node("Squeeze", {"row", "sq_axes"}, "row1");
  node("Concat", {"row1", "row1"}, "twice", {{"axis", int64_t{0}}});
  constant("three", TensorData::from_ints({-3}, {}));
  node("Div", {"twice", "three"}, "divided");  // truncation toward zero
  node("Cast", {"divided"}, "asfloat", {{"to", int64_t{1}}});
  g.outputs = {"sliced", "asfloat"};

  ASSERT_TRUE(fold_constants(g).ok());
  EXPECT_TRUE(g.nodes.empty());
  EXPECT_EQ(g.initializers.at("sliced").shape, (Shape{2, 2}));
  EXPECT_EQ(g.initializers.at("sliced").as_ints().value(), (std::vector<int64_t>{12, 10, 15, 13}));
  EXPECT_EQ(g.initializers.at("divided").as_ints().value(), (std::vector<int64_t>{-4, -4, -5, -4, -4, -5}));
  const TensorData& f = g.initializers.at("asfloat");
  ASSERT_EQ(f.dtype, DType::kF32);
  EXPECT_FLOAT_EQ(f.data<float>()[2], -5.0f);
  remove_dead_nodes(g);
  EXPECT_FALSE(g.is_initializer("row"));
  EXPECT_TRUE(g.validate().ok());
}

TEST(FoldRules, ErrorsNameTheNode) {
  Graph g;
  g.name = "fold";
  g.opset = 17;
  g.initializers["a"] = TensorData::from_ints({1, 2}, {2});
  g.initializers["z"] = TensorData::from_ints({0}, {1});
  g.set_value(ValueInfo::of("a", DType::kI64, {2}));
  g.set_value(ValueInfo::of("z", DType::kI64, {1}));
  Node div;
  div.name = "divide";
  div.op = "Div";
  div.inputs = {"a", "z"};
  div.outputs = {"q"};
  g.nodes.push_back(div);
  g.outputs = {"q"};
  Status status = fold_constants(g);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("Div 'divide'"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("division by zero"), std::string::npos) << status.message();
}

TEST(FoldRules, ParametersAreNeverFolded) {
  Graph g;
  g.name = "params";
  g.opset = 17;
  g.initializers["w"] = TensorData::from_floats({1, 2, 3, 4}, {2, 2});
  g.set_value(ValueInfo::of("w", DType::kF32, {2, 2}));
  g.parameters.insert("w");
  g.initializers["s"] = TensorData::from_ints({4}, {1});
  g.set_value(ValueInfo::of("s", DType::kI64, {1}));
  Node reshape;
  reshape.name = "flat";
  reshape.op = "Reshape";
  reshape.inputs = {"w", "s"};
  reshape.outputs = {"wf"};
  g.nodes.push_back(reshape);
  g.outputs = {"wf"};
  ASSERT_TRUE(fold_constants(g).ok());
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(g.find_value("wf")->static_shape(), (Shape{4}));
  g.parameters.clear();  // the same tensor as a plain constant folds
  ASSERT_TRUE(fold_constants(g).ok());
  EXPECT_TRUE(g.nodes.empty());
  EXPECT_TRUE(g.is_initializer("wf"));
}

}  // namespace
}  // namespace ravnest::fe
