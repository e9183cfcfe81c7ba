// import_model refuses PyTorch exports made in EVAL mode or with constant
// folding (they cannot be trained faithfully), naming the evidence and the
// re-export call; TRAINING exports without folding, and files from other
// producers, pass that check. Fixtures: models/*/<name>_small_eval.onnx, written by
// models/export_all.py with torch.onnx.export's defaults.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "frontend/import.h"
#include "model_builder.h"

namespace ravnest::fe {
namespace {

using testing::filled;
using testing::ModelBuilder;
using testing::set_int;
using testing::test_dir;

const char kReexport[] =
    "torch.onnx.export(model, args, path, opset_version=17, training=torch.onnx.TrainingMode.TRAINING, "
    "do_constant_folding=False)";
const char kEvalMark[] = "made in EVAL mode or with constant folding";

std::string source(const std::string& relative) { return std::string(RAVNEST_SOURCE_DIR) + "/" + relative; }

void expect_eval_rejection(const std::string& path, const std::vector<std::string>& evidence) {
  ImportOptions options;
  options.batch = 2;
  auto graph = import_model(path, options);
  ASSERT_FALSE(graph.ok()) << path << " was accepted";
  EXPECT_EQ(graph.status().code(), Code::kInvalidArgument) << graph.status().to_string();
  const std::string& message = graph.status().message();
  for (const std::string& part : evidence)
    EXPECT_NE(message.find(part), std::string::npos) << "message lacks '" << part << "': " << message;
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find(kReexport), std::string::npos) << message;
}

// Whatever else import says about `path`, it is not the EVAL-export error.
void expect_not_eval_rejection(const std::string& path) {
  ImportOptions options;
  options.batch = 2;
  auto graph = import_model(path, options);
  if (!graph.ok()) {
    EXPECT_EQ(graph.status().message().find(kEvalMark), std::string::npos) << path << ": " << graph.status().message();
  }
}

// minGPT in EVAL mode: Linear weights pre-transposed into 'onnx::MatMul_*' initializers, and equal LayerNorm
// weights merged (Identity nodes copying one initializer).
TEST(EvalExport, RejectsPreTransposedAndMergedWeights) {
  expect_eval_rejection(source("models/gpt_sorter/gpt_sorter_small_eval.onnx"),
                        {"initializer 'onnx::MatMul_", "MatMul node", "a copy of initializer 'transformer.",
                         "more like it"});
}

// ResNet in EVAL mode: every BatchNorm folded into its Conv ('onnx::Conv_*' initializers).
TEST(EvalExport, RejectsBatchNormFoldedIntoConv) {
  expect_eval_rejection(source("models/resnet50/resnet50_small_eval.onnx"),
                        {"initializer 'onnx::Conv_", "read by Conv node", "BatchNorm folded into a Conv"});
}

TEST(EvalExport, AcceptsTrainingExports) {
  expect_not_eval_rejection(source("models/cnn/cnn.onnx"));
  for (const char* name : {"resnet50", "inception_v3", "bert", "gpt_sorter", "llama_block", "gpt2_small"})
    expect_not_eval_rejection(source(std::string("models/") + name + "/" + name + "_small.onnx"));
}

// x[2,3,4,4] -> BatchNormalization -> y, from `producer`; training_mode unset when < 0.
std::string batchnorm_model(const std::string& producer, int64_t training_mode) {
  ModelBuilder b(17);
  b.proto().set_producer_name(producer);
  b.input("x", {"2", "3", "4", "4"}).output("y");
  b.initializer("bn.weight", filled({3}, 1.0f));
  b.initializer("bn.bias", filled({3}, 0.0f));
  b.initializer("bn.running_mean", filled({3}, 0.0f));
  b.initializer("bn.running_var", filled({3}, 1.0f));
  auto& node = b.node("BatchNormalization", {"x", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"},
                      {"y"}, "/bn/BatchNormalization");
  if (training_mode >= 0) set_int(node, "training_mode", training_mode);
  return b.save(test_dir() / (producer + std::to_string(training_mode) + ".onnx"));
}

// EVAL mode without constant folding keeps BatchNorm, in inference form.
TEST(EvalExport, RejectsInferenceBatchNorm) {
  expect_eval_rejection(batchnorm_model("pytorch", -1),
                        {"BatchNormalization node '/bn/BatchNormalization' is in inference mode"});
  expect_eval_rejection(batchnorm_model("pytorch", 0), {"'/bn/BatchNormalization' is in inference mode"});
}

TEST(EvalExport, TrainingBatchNormAndOtherProducersPass) {
  expect_not_eval_rejection(batchnorm_model("pytorch", 1));
  expect_not_eval_rejection(batchnorm_model("ravnest", -1));  // the rules describe PyTorch's exporter only
}

}  // namespace
}  // namespace ravnest::fe
