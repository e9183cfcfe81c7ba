// The zoo's committed small target models (models/<name>/<name>_small.onnx, made by
// models/export_all.py) import: frontend import plus shape inference give static
// shapes for the data, labels, loss and logits, and the float initializers the
// import keeps as parameters are exactly the file's (trainable weights plus
// BatchNorm running statistics). A model whose file uses an op or attribute the
// op table lacks today is skipped, naming every such op; it must import once its
// op family lands.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <set>
#include <string>

#include "common/onnx_graph.h"
#include "frontend/import.h"
#include "frontend/op_table.h"

namespace ravnest::fe {
namespace {

struct TargetModel {
  std::string name;
  int64_t batch;             // the fixture batch of models/<name>/reference.rvt
  DType input_dtype;
  Shape input, labels, logits;  // at `batch`
  int64_t float_elements;    // trainable parameters + BatchNorm running mean and variance
};

std::ostream& operator<<(std::ostream& os, const TargetModel& m) { return os << m.name; }

std::string model_path(const std::string& name) {
  return std::string(RAVNEST_SOURCE_DIR) + "/models/" + name + "/" + name + "_small.onnx";
}

// Every op type of the file that the op table lacks at the file's opset, or "" if none.
std::string missing_ops(const std::string& path) {
  auto model = read_model_proto(path);
  if (!model.ok()) return "";
  int64_t opset = 0;
  for (const auto& entry : model->opset_import())
    if (entry.domain().empty() || entry.domain() == "ai.onnx") opset = entry.version();
  std::set<std::string> missing;
  for (const auto& np : model->graph().node()) {
    Node node;
    node.name = np.name();
    node.op = np.op_type();
    node.domain = np.domain() == "ai.onnx" ? "" : np.domain();
    if (!check_op(node, opset).ok()) missing.insert(node.op);
  }
  std::string list;
  for (const auto& op : missing) list += (list.empty() ? "" : ", ") + op;
  return list;
}

class TargetModels : public ::testing::TestWithParam<TargetModel> {};

TEST_P(TargetModels, ImportWithStaticShapes) {
  const TargetModel& want = GetParam();
  const std::string path = model_path(want.name);
  const std::string missing = missing_ops(path);
  if (!missing.empty()) GTEST_SKIP() << want.name << " needs ops the op table lacks: " << missing;

  ImportOptions options;
  options.batch = want.batch;
  auto graph = import_model(path, options);
  if (!graph.ok() && graph.status().code() == Code::kUnsupported)
    GTEST_SKIP() << want.name << " uses an unsupported op form: " << graph.status().message();
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();

  ASSERT_EQ(graph->inputs, (std::vector<std::string>{"input", "labels"}));
  const ValueInfo* input = graph->find_value("input");
  const ValueInfo* labels = graph->find_value("labels");
  const ValueInfo* loss = graph->find_value("loss");
  const ValueInfo* logits = graph->find_value("logits");
  ASSERT_TRUE(input && labels && loss && logits);
  EXPECT_EQ(input->dtype, want.input_dtype);
  EXPECT_EQ(input->static_shape(), want.input);
  EXPECT_EQ(labels->dtype, DType::kI64);
  EXPECT_EQ(labels->static_shape(), want.labels);
  EXPECT_EQ(loss->static_shape(), Shape{});
  EXPECT_EQ(logits->static_shape(), want.logits);
  EXPECT_EQ(graph->outputs, (std::vector<std::string>{"loss", "logits"}));

  // Trainable parameters plus running state (BatchNorm statistics), kept apart.
  int64_t elements = 0;
  for (const auto* names : {&graph->parameters, &graph->state})
    for (const auto& name : *names) {
      ASSERT_TRUE(graph->initializers.count(name)) << name;
      elements += numel(graph->initializers.at(name).shape);
    }
  EXPECT_EQ(elements, want.float_elements);
  for (const auto& name : graph->state)
    EXPECT_NE(name.find("running_"), std::string::npos) << name << " is state but not a BatchNorm statistic";
}

INSTANTIATE_TEST_SUITE_P(
    Zoo, TargetModels,
    ::testing::Values(TargetModel{"resnet50", 8, DType::kF32, {8, 3, 32, 32}, {8}, {8, 10}, 58126 + 1928},
                      TargetModel{"inception_v3", 8, DType::kF32, {8, 3, 75, 75}, {8}, {8, 200}, 112968 + 2152},
                      TargetModel{"bert", 4, DType::kI64, {4, 16}, {4}, {4, 4}, 22948},
                      TargetModel{"gpt_sorter", 8, DType::kI64, {8, 11}, {8, 11}, {8, 11, 3}, 6864},
                      TargetModel{"llama_block", 4, DType::kI64, {4, 16}, {4, 16}, {4, 16, 128}, 28832},
                      TargetModel{"gpt2_small", 2, DType::kI64, {2, 16}, {2, 16}, {2, 16, 512}, 136960}),
    [](const ::testing::TestParamInfo<TargetModel>& info) { return info.param.name; });

// GPT-2's LM head is the token embedding: one parameter, read by the first Gather and the last MatMul.
TEST(TargetModels, Gpt2TiedEmbeddingIsOneParameter) {
  auto model = read_model_proto(model_path("gpt2_small"));
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  std::set<std::string> readers;
  for (const auto& np : model->graph().node())
    for (const auto& in : np.input())
      if (in == "transformer.wte.weight") readers.insert(np.op_type());
  // The embedding lookup, and the LM head's Transpose feeding its MatMul.
  EXPECT_EQ(readers, (std::set<std::string>{"Gather", "Transpose"}));
  for (const auto& init : model->graph().initializer()) EXPECT_NE(init.name(), "lm_head.weight");
}

}  // namespace
}  // namespace ravnest::fe
