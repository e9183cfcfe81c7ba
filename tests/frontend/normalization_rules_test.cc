// Rules of the normalization family (frontend/ops/normalization.cc) at their edges:
// BatchNormalization's output forms per training_mode and opset, LayerNormalization's
// statistics shapes, the pools' ceil_mode geometry and gradient shapes, and the
// gradient graphs (which ops, B or W, no B node reading a W node's output).
#include <gtest/gtest.h>

#include <set>

#include "frontend/autodiff.h"
#include "frontend/op_table.h"

namespace ravnest::fe {
namespace {

using Ints = std::vector<int64_t>;

struct Net {
  Graph graph;

  explicit Net(int64_t opset = 17) { graph.opset = opset; }
  Net& in(const std::string& name, const Shape& shape) {
    graph.inputs.push_back(name);
    graph.set_value(ValueInfo::of(name, DType::kF32, shape));
    return *this;
  }
  Net& param(const std::string& name, const Shape& shape, bool trainable = true) {
    graph.initializers[name] = TensorData::from_floats(std::vector<float>(static_cast<size_t>(numel(shape)), 1.0f), shape);
    if (trainable) graph.parameters.insert(name);
    graph.set_value(ValueInfo::of(name, DType::kF32, shape));
    return *this;
  }
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
};

Net batchnorm_net(const Shape& x, int64_t opset = 17) {
  Net net(opset);
  net.in("x", x).param("scale", {x[1]}).param("b", {x[1]}).param("mean", {x[1]}, false).param("var", {x[1]}, false);
  return net;
}

TEST(NormalizationRules, BatchNormTrainingFormHasRunningOutputs) {
  Net net = batchnorm_net({4, 3, 5, 5});
  ASSERT_TRUE(net.node("BatchNormalization", {"x", "scale", "b", "mean", "var"}, {"y", "rm", "rv"},
                       {{"training_mode", int64_t{1}}})
                  .ok());
  EXPECT_EQ(net.shape("y"), (Shape{4, 3, 5, 5}));
  EXPECT_EQ(net.shape("rm"), (Shape{3}));
  EXPECT_EQ(net.shape("rv"), (Shape{3}));
}

TEST(NormalizationRules, BatchNormRejectsBadForms) {
  Net wrong_scale = batchnorm_net({2, 3, 4});
  wrong_scale.param("scale", {4});
  Status s = wrong_scale.node("BatchNormalization", {"x", "scale", "b", "mean", "var"}, {"y"});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.to_string().find("scale"), std::string::npos) << s.to_string();

  Net eval_outputs = batchnorm_net({2, 3});
  s = eval_outputs.node("BatchNormalization", {"x", "scale", "b", "mean", "var"}, {"y", "rm", "rv"});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.to_string().find("training_mode"), std::string::npos) << s.to_string();

  Net old_opset = batchnorm_net({2, 3}, 13);
  s = old_opset.node("BatchNormalization", {"x", "scale", "b", "mean", "var"}, {"y", "m", "v", "sm", "sv"});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.to_string().find("opset_version >= 14"), std::string::npos) << s.to_string();
}

// The nodes of the backward graph by op, and a check that no B node reads a W output.
std::map<std::string, Work> backward_ops(Graph& graph, BackwardRequest request) {
  auto bg = build_backward(graph, request);
  EXPECT_TRUE(bg.ok()) << bg.status().to_string();
  std::map<std::string, Work> ops;
  if (!bg.ok()) return ops;
  std::set<std::string> w_outputs;
  for (size_t i = 0; i < bg->nodes.size(); ++i) {
    const Node& n = bg->nodes[i];
    ops[n.op] = bg->work[i];
    if (bg->work[i] == Work::kW) w_outputs.insert(n.outputs.begin(), n.outputs.end());
  }
  for (size_t i = 0; i < bg->nodes.size(); ++i) {
    if (bg->work[i] != Work::kB) continue;
    for (const std::string& in : bg->nodes[i].inputs) {
      EXPECT_EQ(w_outputs.count(in), 0u) << "B node " << bg->nodes[i].name << " reads W output " << in;
    }
  }
  return ops;
}

TEST(NormalizationRules, BatchNormGradientSplitsBAndW) {
  Net net = batchnorm_net({4, 3, 2, 2});
  ASSERT_TRUE(net.node("BatchNormalization", {"x", "scale", "b", "mean", "var"}, {"y"}, {{"training_mode", int64_t{1}}}).ok());
  net.graph.outputs = {"y"};
  BackwardRequest request;
  request.seeds = {"y"};
  request.params = {"scale", "b"};
  request.inputs_needing_grad = {"x"};
  auto ops = backward_ops(net.graph, request);
  ASSERT_EQ(ops.count("BatchNormalizationGrad"), 1u);
  ASSERT_EQ(ops.count("BatchNormalizationParamGrad"), 1u);
  EXPECT_EQ(ops["BatchNormalizationGrad"], Work::kB);
  EXPECT_EQ(ops["BatchNormalizationParamGrad"], Work::kW);
}

TEST(NormalizationRules, LayerNormStatisticsShapesAndGradient) {
  Net net;
  net.in("x", {2, 3, 4}).param("scale", {3, 4}).param("b", {3, 4});
  ASSERT_TRUE(net.node("LayerNormalization", {"x", "scale", "b"}, {"y", "mean", "inv_std"}, {{"axis", int64_t{1}}}).ok());
  EXPECT_EQ(net.shape("mean"), (Shape{2, 1, 1}));
  EXPECT_EQ(net.shape("inv_std"), (Shape{2, 1, 1}));

  Net bad;
  bad.in("x", {2, 3, 4}).param("scale", {3});
  EXPECT_FALSE(bad.node("LayerNormalization", {"x", "scale"}, {"y"}).ok());

  Net train;
  train.in("x", {2, 5}).param("scale", {5}).param("b", {5});
  ASSERT_TRUE(train.node("LayerNormalization", {"x", "scale", "b"}, {"y"}).ok());
  train.graph.outputs = {"y"};
  BackwardRequest request;
  request.seeds = {"y"};
  request.params = {"scale", "b"};
  request.inputs_needing_grad = {"x"};
  auto ops = backward_ops(train.graph, request);
  EXPECT_EQ(ops["LayerNormalizationGrad"], Work::kB);
  EXPECT_EQ(ops["LayerNormalizationParamGrad"], Work::kW);
  // Autodiff made the forward emit the statistics the gradients read.
  const Node& fwd = train.graph.nodes[0];
  ASSERT_EQ(fwd.outputs.size(), 3u);
  EXPECT_FALSE(fwd.outputs[1].empty());
  EXPECT_EQ(train.shape(fwd.outputs[2]), (Shape{2, 1}));
}

TEST(NormalizationRules, PoolGeometryAndGradientShapes) {
  Net net;
  net.in("x", {1, 2, 6, 6});
  // ceil_mode: (6 + 2 - 3) / 2 rounds up to 3, + 1 = 4 windows; the last starts inside the input.
  ASSERT_TRUE(net.node("AveragePool", {"x"}, {"y"},
                       {{"kernel_shape", Ints{3, 3}}, {"strides", Ints{2, 2}}, {"pads", Ints{1, 1, 1, 1}},
                        {"ceil_mode", int64_t{1}}})
                  .ok());
  EXPECT_EQ(net.shape("y"), (Shape{1, 2, 4, 4}));
  ASSERT_TRUE(net.node("GlobalAveragePool", {"x"}, {"g"}).ok());
  EXPECT_EQ(net.shape("g"), (Shape{1, 2, 1, 1}));

  Net grad;
  grad.in("dy", {1, 2, 4, 4});
  ASSERT_TRUE(grad.node("AveragePoolGrad", {"dy"}, {"dx"},
                        {{"kernel_shape", Ints{3, 3}}, {"strides", Ints{2, 2}}, {"pads", Ints{1, 1, 1, 1}},
                         {"ceil_mode", int64_t{1}}, {"input_shape", Ints{1, 2, 6, 6}}},
                        kRavnestDomain)
                  .ok());
  EXPECT_EQ(grad.shape("dx"), (Shape{1, 2, 6, 6}));
  // An input_shape that does not pool to dY is an error.
  EXPECT_FALSE(grad.node("AveragePoolGrad", {"dy"}, {"dx2"},
                         {{"kernel_shape", Ints{3, 3}}, {"strides", Ints{2, 2}}, {"input_shape", Ints{1, 2, 6, 6}}},
                         kRavnestDomain)
                   .ok());
}

}  // namespace
}  // namespace ravnest::fe
