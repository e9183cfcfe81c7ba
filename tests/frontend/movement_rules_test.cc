// The movement family's rules at their edges: Split (opset 13 and 18), Pad, Expand,
// Tile, Dropout, the gradient ops' shapes, cost sides, the fold rules it kept, and
// the structure of the gradients it emits (inverse perm, slices only where needed,
// zeros for unreached Split outputs, W vs B work for Gather, identity Dropout).
#include <gtest/gtest.h>

#include <algorithm>

#include "frontend/autodiff.h"
#include "frontend/op_table.h"

namespace ravnest::fe {
namespace {

using Ints = std::vector<int64_t>;

TensorData ints(const Ints& v) { return TensorData::from_ints(v, {static_cast<int64_t>(v.size())}); }

// A one-node graph: inputs (activations, parameters or constants), then shape inference.
struct Fixture {
  Graph graph;
  Node node;

  explicit Fixture(const std::string& op, std::string domain = "") {
    graph.name = "t";
    graph.opset = 17;
    node.name = "n";
    node.op = op;
    node.domain = std::move(domain);
  }
  Fixture& in(const std::string& name, const Shape& shape, DType dtype = DType::kF32) {
    graph.inputs.push_back(name);
    graph.set_value(ValueInfo::of(name, dtype, shape));
    node.inputs.push_back(name);
    return *this;
  }
  Fixture& param(const std::string& name, const Shape& shape) {
    TensorData t;
    t.dtype = DType::kF32;
    t.shape = shape;
    t.bytes.assign(static_cast<size_t>(numel(shape)) * 4, 0);
    graph.initializers[name] = t;
    graph.parameters.insert(name);
    graph.set_value(ValueInfo::of(name, DType::kF32, shape));
    node.inputs.push_back(name);
    return *this;
  }
  Fixture& constant(const std::string& name, const TensorData& t) {
    graph.initializers[name] = t;
    graph.set_value(ValueInfo::of(name, t.dtype, t.shape));
    node.inputs.push_back(name);
    return *this;
  }
  Fixture& skip() {
    node.inputs.push_back("");
    return *this;
  }
  Fixture& out(const std::string& name) {
    node.outputs.push_back(name);
    return *this;
  }
  Fixture& attr(const std::string& key, AttrValue value) {
    node.attrs[key] = std::move(value);
    return *this;
  }
  Status infer() {
    const OpDef* def = find_op(node.domain, node.op, static_cast<int>(graph.opset));
    if (!def) return error(Code::kUnsupported, node.op, " missing from the table");
    return def->shape(node, graph);
  }
  Shape shape(const std::string& value) const { return graph.find_value(value)->static_shape(); }
  // Runs the shape rule, adds the node, and derives the backward from `seeds`.
  Result<BackwardGraph> backward(const std::vector<std::string>& seeds, const std::set<std::string>& needing = {}) {
    RN_RETURN_IF_ERROR(infer());
    graph.nodes = {node};
    BackwardRequest request;
    request.seeds = seeds;
    request.params = graph.parameters;
    request.inputs_needing_grad = needing;
    return build_backward(graph, request);
  }
};

void expect_error(const Status& s, const std::string& part, Code code = Code::kInvalidArgument) {
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), code) << s.to_string();
  EXPECT_NE(s.message().find(part), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("'n'"), std::string::npos) << "the error must name the node: " << s.message();
}

std::vector<const Node*> nodes_of(const BackwardGraph& bg, const std::string& op) {
  std::vector<const Node*> found;
  for (const Node& n : bg.nodes)
    if (n.op == op) found.push_back(&n);
  return found;
}

Work work_of(const BackwardGraph& bg, const std::string& op) {
  for (size_t i = 0; i < bg.nodes.size(); ++i)
    if (bg.nodes[i].op == op) return bg.work[i];
  ADD_FAILURE() << "no " << op << " node";
  return Work::kB;
}

TEST(MovementRules, SplitSizesFromInputNumOutputsOrEqualParts) {
  Fixture sizes("Split");
  sizes.in("x", {2, 7}).constant("s", ints({2, 5})).out("a").out("b").attr("axis", int64_t{1});
  ASSERT_TRUE(sizes.infer().ok());
  EXPECT_EQ(sizes.shape("a"), (Shape{2, 2}));
  EXPECT_EQ(sizes.shape("b"), (Shape{2, 5}));

  Fixture uneven("Split");
  uneven.graph.opset = 18;
  uneven.in("x", {7, 3}).out("a").out("b").out("c").attr("num_outputs", int64_t{3});
  ASSERT_TRUE(uneven.infer().ok());
  EXPECT_EQ(uneven.shape("a"), (Shape{3, 3}));
  EXPECT_EQ(uneven.shape("c"), (Shape{1, 3}));

  Fixture indivisible("Split");
  indivisible.in("x", {7, 3}).out("a").out("b");
  expect_error(indivisible.infer(), "does not split into 2 equal parts");
  Fixture wrong_sum("Split");
  wrong_sum.in("x", {7}).constant("s", ints({3, 3})).out("a").out("b");
  expect_error(wrong_sum.infer(), "sum to 6, not dim 7");
  Fixture wrong_count("Split");
  wrong_count.in("x", {6}).out("a").out("b").attr("num_outputs", int64_t{3});
  expect_error(wrong_count.infer(), "num_outputs is 3 but the node has 2 outputs");
}

TEST(MovementRules, PadExpandTileShapes) {
  Fixture pad("Pad");
  pad.in("x", {2, 3, 4}).constant("p", ints({0, 1, 2, 1, 0, -1}));
  ASSERT_TRUE(pad.out("y").infer().ok());
  EXPECT_EQ(pad.shape("y"), (Shape{3, 4, 5}));
  Fixture axes("Pad");
  axes.graph.opset = 18;
  axes.in("x", {2, 3}).constant("p", ints({2, 5})).skip().constant("a", ints({-1})).out("y");
  ASSERT_TRUE(axes.infer().ok());
  EXPECT_EQ(axes.shape("y"), (Shape{2, 10}));
  Fixture reflect("Pad");
  reflect.in("x", {2, 3}).constant("p", ints({1, 1, 1, 1})).out("y").attr("mode", std::string("reflect"));
  expect_error(reflect.infer(), "mode='reflect' is not supported", Code::kUnsupported);
  Fixture short_pads("Pad");
  short_pads.in("x", {2, 3}).constant("p", ints({1, 1})).out("y");
  expect_error(short_pads.infer(), "pads has 2 values, expected 4");
  Fixture dynamic("Pad");
  dynamic.in("x", {2, 3}).in("p", {4}, DType::kI64).out("y");
  expect_error(dynamic.infer(), "not a compile-time constant");

  Fixture expand("Expand");
  expand.in("x", {3, 1}).constant("s", ints({2, 1, 4})).out("y");
  ASSERT_TRUE(expand.infer().ok());
  EXPECT_EQ(expand.shape("y"), (Shape{2, 3, 4}));
  Fixture bad_expand("Expand");
  bad_expand.in("x", {3, 2}).constant("s", ints({4})).out("y");
  expect_error(bad_expand.infer(), "do not broadcast");

  Fixture tile("Tile");
  tile.in("x", {2, 3}).constant("r", ints({3, 1})).out("y");
  ASSERT_TRUE(tile.infer().ok());
  EXPECT_EQ(tile.shape("y"), (Shape{6, 3}));
  Fixture bad_tile("Tile");
  bad_tile.in("x", {2, 3}).constant("r", ints({3})).out("y");
  expect_error(bad_tile.infer(), "repeats has 1 values for an input of rank 2");
}

TEST(MovementRules, DropoutNeedsConstantRatioAndTrainingMode) {
  TensorData on;
  on.dtype = DType::kBool;
  on.bytes = {1};
  Fixture ok("Dropout");
  ok.in("x", {4, 5}).constant("r", TensorData::from_floats({0.1f}, {})).constant("t", on).out("y").out("m");
  ASSERT_TRUE(ok.infer().ok());
  EXPECT_EQ(ok.graph.find_value("m")->dtype, DType::kBool);
  EXPECT_EQ(ok.shape("m"), (Shape{4, 5}));
  Fixture dynamic("Dropout");
  dynamic.in("x", {4}).in("r", {}).out("y");
  expect_error(dynamic.infer(), "ratio input 'r' must be a constant scalar");
  Fixture one("Dropout");
  one.in("x", {4}).constant("r", TensorData::from_floats({1.0f}, {})).out("y");
  expect_error(one.infer(), "is not in [0, 1)");
  Fixture dynamic_mode("Dropout");
  dynamic_mode.in("x", {4}).constant("r", TensorData::from_floats({0.1f}, {})).in("t", {}, DType::kBool).out("y");
  expect_error(dynamic_mode.infer(), "training_mode input 't' must be a constant boolean");
}

TEST(MovementRules, GradientOpShapes) {
  Fixture slice("SliceGrad", kRavnestDomain);
  slice.in("dy", {2, 3}).constant("s", ints({1, -1})).constant("e", ints({3, INT64_MIN})).constant("a", ints({0, 1}));
  slice.constant("st", ints({1, -2})).out("dx").attr("shape", Ints{4, 6});
  ASSERT_TRUE(slice.infer().ok()) << slice.infer().to_string();
  EXPECT_EQ(slice.shape("dx"), (Shape{4, 6}));
  Fixture bad_slice("SliceGrad", kRavnestDomain);
  bad_slice.in("dy", {2, 2}).constant("s", ints({1})).constant("e", ints({3})).out("dx").attr("shape", Ints{4, 6});
  expect_error(bad_slice.infer(), "gives 2x6, but dY is 2x2");

  Fixture gather("GatherGrad", kRavnestDomain);
  gather.in("dy", {2, 3, 8}).in("i", {2, 3}, DType::kI64).out("dx").attr("shape", Ints{100, 8});
  ASSERT_TRUE(gather.infer().ok());
  EXPECT_EQ(gather.shape("dx"), (Shape{100, 8}));
  Fixture bad_gather("GatherGrad", kRavnestDomain);
  bad_gather.in("dy", {2, 3, 8}).in("i", {3}, DType::kI64).out("dx").attr("shape", Ints{100, 8});
  expect_error(bad_gather.infer(), "gives 3x8");

  Fixture dropout("DropoutGrad", kRavnestDomain);
  dropout.in("dy", {5}).in("m", {5}, DType::kF32).out("dx").attr("ratio", 0.1f);
  expect_error(dropout.infer(), "mask must be bool");
}

TEST(MovementRules, KeepsTheCoreFoldRules) {
  for (const char* op : {"Reshape", "Identity", "Unsqueeze", "Squeeze", "Concat", "Slice", "Gather", "Cast"}) {
    const OpDef* def = find_op("", op, 17);
    ASSERT_NE(def, nullptr) << op;
    EXPECT_TRUE(def->foldable) << op;
    EXPECT_TRUE(static_cast<bool>(def->grad)) << op;
  }
  for (const char* op : {"Transpose", "Flatten", "Split", "Expand", "Pad", "Tile", "Dropout"})
    EXPECT_TRUE(static_cast<bool>(find_op("", op, 17)->grad)) << op;
  for (const char* op : {"SliceGrad", "GatherGrad", "DropoutGrad"}) EXPECT_NE(find_op(kRavnestDomain, op, 1), nullptr);
}

TEST(MovementRules, GatherCostAndGradientSideFollowTheData) {
  Fixture emb("Gather");
  emb.param("table", {50, 16}).in("ids", {4, 7}, DType::kI64).out("y");
  auto bg = emb.backward({"y"});
  ASSERT_TRUE(bg.ok()) << bg.status().to_string();
  OpCost cost = find_op("", "Gather", 17)->cost(emb.node, emb.graph);
  EXPECT_DOUBLE_EQ(cost.backward_weight_flops, 4.0 * 7 * 16);
  EXPECT_DOUBLE_EQ(cost.backward_input_flops, 0);
  EXPECT_EQ(work_of(*bg, "GatherGrad"), Work::kW);
  EXPECT_EQ(nodes_of(*bg, "GatherGrad")[0]->attr_ints("shape"), (Ints{50, 16}));

  Fixture hidden("Gather");
  hidden.in("h", {2, 9, 16}).constant("i", ints({0})).out("y").attr("axis", int64_t{1});
  auto hb = hidden.backward({"y"}, {"h"});
  ASSERT_TRUE(hb.ok()) << hb.status().to_string();
  EXPECT_EQ(work_of(*hb, "GatherGrad"), Work::kB);
  EXPECT_EQ(nodes_of(*hb, "GatherGrad")[0]->attr_int("axis", 0), 1);
}

TEST(MovementRules, GradientStructure) {
  // Transpose: the inverse permutation.
  Fixture tr("Transpose");
  tr.in("x", {2, 3, 4, 5}).out("y").attr("perm", Ints{0, 2, 3, 1});
  auto tb = tr.backward({"y"}, {"x"});
  ASSERT_TRUE(tb.ok()) << tb.status().to_string();
  EXPECT_EQ(nodes_of(*tb, "Transpose")[0]->attr_ints("perm"), (Ints{0, 3, 1, 2}));

  // Concat: one Slice per input that needs a gradient, none for constants.
  Fixture cat("Concat");
  cat.in("a", {2, 3}).constant("k", TensorData::from_floats(std::vector<float>(8, 0.f), {2, 4})).in("b", {2, 1});
  cat.out("y").attr("axis", int64_t{-1});
  auto cb = cat.backward({"y"}, {"a", "b"});
  ASSERT_TRUE(cb.ok()) << cb.status().to_string();
  auto slices = nodes_of(*cb, "Slice");
  ASSERT_EQ(slices.size(), 2u);
  EXPECT_EQ(cb->constants.at(slices[1]->inputs[1]).as_ints().value(), (Ints{7}));  // b starts after a and k
  EXPECT_EQ(cb->constants.at(slices[1]->inputs[2]).as_ints().value(), (Ints{8}));

  // Split with one output unreached: Concat of its gradient and a zeros constant.
  Fixture split("Split");
  split.in("x", {4, 6}).constant("s", ints({2, 4})).out("a").out("b").attr("axis", int64_t{1});
  auto sb = split.backward({"b"}, {"x"});
  ASSERT_TRUE(sb.ok()) << sb.status().to_string();
  auto concat = nodes_of(*sb, "Concat");
  ASSERT_EQ(concat.size(), 1u);
  ASSERT_TRUE(sb->constants.count(concat[0]->inputs[0]));
  EXPECT_EQ(sb->constants.at(concat[0]->inputs[0]).shape, (Shape{4, 2}));
  EXPECT_EQ(concat[0]->attr_int("axis", 0), 1);

  // Dropout that never drops (training_mode false): the gradient passes through, no mask is added.
  Fixture eval("Dropout");
  eval.in("x", {3, 4}).constant("r", TensorData::from_floats({0.5f}, {})).out("y");
  auto eb = eval.backward({"y"}, {"x"});
  ASSERT_TRUE(eb.ok()) << eb.status().to_string();
  EXPECT_TRUE(nodes_of(*eb, "DropoutGrad").empty());
  EXPECT_EQ(eval.graph.nodes[0].outputs.size(), 1u);

  // Pad with cropping pads has no gradient rule: an error, not a wrong gradient.
  Fixture crop("Pad");
  crop.in("x", {4, 4}).constant("p", ints({1, -1, 0, 0})).out("y");
  auto pb = crop.backward({"y"}, {"x"});
  ASSERT_FALSE(pb.ok());
  EXPECT_NE(pb.status().message().find("negative (cropping) pads"), std::string::npos) << pb.status().message();
}

}  // namespace
}  // namespace ravnest::fe
