// import_model: every user-facing error names what is wrong; the PyTorch CNN and
// synthetic shape-computing graphs import to static, folded graphs.
#include "frontend/import.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <random>

#include "frontend/inspect.h"
#include "frontend/op_table.h"
#include "model_builder.h"

namespace ravnest::fe {
namespace {

using testing::filled;
using testing::ModelBuilder;
using testing::set_int;
using testing::set_ints;
using testing::test_dir;

// Expects `result` to fail with `code` and a message containing every part.
template <typename T>
void expect_error(const Result<T>& result, Code code, const std::vector<std::string>& parts) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), code) << result.status().to_string();
  for (const std::string& part : parts)
    EXPECT_NE(result.status().message().find(part), std::string::npos)
        << "message lacks '" << part << "': " << result.status().message();
}

// x[N,4] -> Relu -> y.
ModelBuilder relu_model(int64_t opset, const std::string& batch_dim = "2") {
  ModelBuilder b(opset);
  b.input("x", {batch_dim, "4"}).output("y");
  b.node("Relu", {"x"}, {"y"}, "relu");
  return b;
}

TEST(ImportErrors, MissingFile) {
  auto dir = test_dir();
  std::string path = (dir / "nope.onnx").string();
  expect_error(import_model(path, {}), Code::kNotFound, {path, "does not exist"});
}

TEST(ImportErrors, NotAnOnnxFile) {
  auto dir = test_dir();
  std::string path = (dir / "random.onnx").string();
  std::mt19937 rng(7);
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 4096; ++i) out.put(static_cast<char>(rng() & 0xff));
  out.close();
  expect_error(import_model(path, {}), Code::kInvalidArgument, {path, "is not an ONNX model"});
}

TEST(ImportErrors, OpsetTooOld) {
  std::string path = relu_model(9).save(test_dir() / "old.onnx");
  expect_error(import_model(path, {}), Code::kUnsupported,
               {"opset 9", "supports opsets 13 to 18", "opset_version=17", path});
}

TEST(ImportErrors, OpsetTooNew) {
  std::string path = relu_model(21).save(test_dir() / "new.onnx");
  expect_error(import_model(path, {}), Code::kUnsupported, {"opset 21", "supports opsets 13 to 18", "opset_version=17"});
}

TEST(ImportErrors, UnsupportedOpNamesNodeOpAndOpset) {
  ModelBuilder b(17);
  b.input("x", {"2", "4"}).output("y");
  b.node("Relu", {"x"}, {"r"}, "relu");
  b.node("Celu", {"r"}, {"y"}, "foo_3");
  std::string path = b.save(test_dir() / "celu.onnx");
  expect_error(import_model(path, {}), Code::kUnsupported,
               {"node 'foo_3'", "op 'Celu'", "(opset 17)", "does not support", "supported ops: ", "Conv", "MaxPool"});
}

TEST(ImportErrors, UnsupportedOpOfOtherDomainNamesDomain) {
  ModelBuilder b(17);
  b.input("x", {"2", "4"}).output("y");
  auto& entry = *b.proto().add_opset_import();
  entry.set_domain("com.microsoft");
  entry.set_version(1);
  b.node("FusedGemm", {"x"}, {"y"}, "fused").set_domain("com.microsoft");
  std::string path = b.save(test_dir() / "ms.onnx");
  expect_error(import_model(path, {}), Code::kUnsupported, {"node 'fused'", "'FusedGemm'", "domain 'com.microsoft'"});
}

TEST(ImportErrors, SymbolicDimLeftUnset) {
  std::string path = relu_model(17, "batch").save(test_dir() / "sym.onnx");
  expect_error(import_model(path, {}), Code::kInvalidArgument,
               {"graph input 'x'", "symbolic dim 'batch'", "--shape x=", "--batch N"});
  // Either option resolves it.
  ImportOptions batch;
  batch.batch = 5;
  auto with_batch = import_model(path, batch);
  ASSERT_TRUE(with_batch.ok()) << with_batch.status().to_string();
  EXPECT_EQ(with_batch->find_value("y")->static_shape(), (Shape{5, 4}));
  ImportOptions shape;
  ASSERT_TRUE(add_shape_option("x=3x4", shape).ok());
  auto with_shape = import_model(path, shape);
  ASSERT_TRUE(with_shape.ok()) << with_shape.status().to_string();
  EXPECT_EQ(with_shape->find_value("y")->static_shape(), (Shape{3, 4}));
}

TEST(ImportErrors, ShapeOptionForUnknownInputOrWrongRank) {
  std::string path = relu_model(17, "batch").save(test_dir() / "sym.onnx");
  ImportOptions unknown;
  ASSERT_TRUE(add_shape_option("images=3x4", unknown).ok());
  expect_error(import_model(path, unknown), Code::kInvalidArgument, {"--shape names input 'images'", "'x'"});
  ImportOptions rank;
  ASSERT_TRUE(add_shape_option("x=3x4x5", rank).ok());
  expect_error(import_model(path, rank), Code::kInvalidArgument, {"--shape x=3x4x5 has rank 3", "batchx4"});
}

TEST(ImportErrors, BadOptionText) {
  ImportOptions options;
  EXPECT_FALSE(add_shape_option("x", options).ok());
  EXPECT_FALSE(add_shape_option("x=3xa", options).ok());
  EXPECT_FALSE(add_shape_option("x=0x4", options).ok());
  EXPECT_FALSE(set_batch_option("0", options).ok());
  EXPECT_FALSE(set_batch_option("-3", options).ok());
  EXPECT_FALSE(set_batch_option("4x4", options).ok());
  ASSERT_TRUE(set_batch_option("64", options).ok());
  EXPECT_EQ(options.batch, 64);
  ASSERT_TRUE(add_shape_option("in=put=2x3", options).ok());  // the last '=' separates
  EXPECT_EQ(options.shapes.at("in=put"), (Shape{2, 3}));
}

TEST(ImportErrors, TruncatedInitializer) {
  ModelBuilder b(17);
  b.input("x", {"2", "4"}).output("y");
  auto& w = b.initializer("w", filled({4, 4}, 1.0f));
  w.set_raw_data(std::string(w.raw_data(), 0, 40));  // 40 of 64 bytes
  b.node("MatMul", {"x", "w"}, {"y"}, "mm");
  std::string path = b.save(test_dir() / "trunc.onnx");
  expect_error(import_model(path, {}), Code::kCorrupt, {"tensor 'w' has 40 bytes", "4x4 needs 64", path});
}

TEST(ImportErrors, InconsistentShapesNameTheNode) {
  ModelBuilder b(17);
  b.input("x", {"2", "4"}).output("y");
  b.initializer("w", filled({5, 3}, 1.0f));
  b.node("MatMul", {"x", "w"}, {"y"}, "mm");
  std::string path = b.save(test_dir() / "bad.onnx");
  auto result = import_model(path, {});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Code::kInvalidArgument);
  // ONNX's inference catches it first and names the op; ours would name the node.
  EXPECT_NE(result.status().message().find("MatMul"), std::string::npos) << result.status().message();
}

// Writes `t` to `file` at `offset` and points `proto` at it.
void make_external(onnx::TensorProto& proto, const std::filesystem::path& file, const std::string& location,
                   int64_t offset) {
  std::string data = proto.raw_data();
  std::ofstream out(file, std::ios::binary);
  out << std::string(static_cast<size_t>(offset), '\0') << data;
  out.close();
  proto.clear_raw_data();
  proto.set_data_location(onnx::TensorProto::EXTERNAL);
  auto add = [&](const std::string& key, const std::string& value) {
    auto* entry = proto.add_external_data();
    entry->set_key(key);
    entry->set_value(value);
  };
  add("location", location);
  add("offset", std::to_string(offset));
  add("length", std::to_string(data.size()));
}

TEST(ImportExternalData, LoadsWeightsFromSideFile) {
  auto dir = test_dir();
  ModelBuilder b(17);
  b.input("x", {"2", "3"}).output("y");
  std::vector<float> values(12);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.5f * static_cast<float>(i);
  auto& w = b.initializer("w", TensorData::from_floats(values, {3, 4}));
  make_external(w, dir / "weights.bin", "weights.bin", 16);
  b.node("MatMul", {"x", "w"}, {"y"}, "mm");
  std::string path = b.save(dir / "ext.onnx");

  auto graph = import_model(path, {});
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();
  const TensorData& loaded = graph->initializers.at("w");
  ASSERT_EQ(loaded.shape, (Shape{3, 4}));
  EXPECT_EQ(std::vector<float>(loaded.data<float>(), loaded.data<float>() + 12), values);
  EXPECT_EQ(graph->parameters, (std::set<std::string>{"w"}));
  EXPECT_EQ(graph->find_value("y")->static_shape(), (Shape{2, 4}));

  std::filesystem::remove(dir / "weights.bin");
  expect_error(import_model(path, {}), Code::kNotFound, {"initializer 'w'", "weights.bin", "is missing"});
}

// x[batch,3,4,5] exercises every fold rule the PyTorch exporter emits:
//   y  = Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))       -> [N, 60]
//   y2 = y + Cast<float>(Range(0, 60, 1)) * 0.5                          (folded: a constant, not a parameter)
//   z  = x * ConstantOfShape(Slice(Shape(x), [1], [INT64_MAX]), 1.0)     -> [N,3,4,5]
//   p  = y2 + Identity(bias)                                             (bias is a parameter: not folded)
ModelBuilder shape_chain_model() {
  ModelBuilder b(17);
  b.input("x", {"batch", "3", "4", "5"}).output("p").output("z");
  b.initializer("bias", filled({60}, 0.25f));
  auto constant = [&](const std::string& name, const TensorData& t) {
    auto& node = b.node("Constant", {}, {name}, "const_" + name);
    auto* attr = node.add_attribute();
    attr->set_name("value");
    attr->set_type(onnx::AttributeProto::TENSOR);
    auto* proto = attr->mutable_t();
    proto->set_data_type(static_cast<int32_t>(t.dtype));
    for (int64_t d : t.shape) proto->add_dims(d);
    proto->set_raw_data(t.bytes.data(), t.bytes.size());
  };
  b.node("Shape", {"x"}, {"shape"}, "shape");
  constant("zero", TensorData::from_ints({0}, {}));
  set_int(b.node("Gather", {"shape", "zero"}, {"n"}, "gather"), "axis", 0);
  constant("axes0", TensorData::from_ints({0}, {1}));
  b.node("Unsqueeze", {"n", "axes0"}, {"n1"}, "unsqueeze");
  constant("minus1", TensorData::from_ints({-1}, {1}));
  set_int(b.node("Concat", {"n1", "minus1"}, {"target"}, "concat"), "axis", 0);
  b.node("Reshape", {"x", "target"}, {"y"}, "reshape");
  constant("start", TensorData::from_ints({0}, {}));
  constant("limit", TensorData::from_ints({60}, {}));
  constant("delta", TensorData::from_ints({1}, {}));
  b.node("Range", {"start", "limit", "delta"}, {"range"}, "range");
  set_int(b.node("Cast", {"range"}, {"rangef"}, "cast"), "to", static_cast<int64_t>(DType::kF32));
  constant("half", TensorData::from_floats({0.5f}, {}));
  b.node("Mul", {"rangef", "half"}, {"ramp"}, "scale");
  b.node("Add", {"y", "ramp"}, {"y2"}, "add_ramp");
  constant("s_start", TensorData::from_ints({1}, {1}));
  constant("s_end", TensorData::from_ints({INT64_MAX}, {1}));
  b.node("Slice", {"shape", "s_start", "s_end"}, {"tail"}, "slice");
  auto& fill = b.node("ConstantOfShape", {"tail"}, {"ones"}, "ones");
  auto* value = fill.add_attribute();
  value->set_name("value");
  value->set_type(onnx::AttributeProto::TENSOR);
  value->mutable_t()->set_data_type(static_cast<int32_t>(DType::kF32));
  value->mutable_t()->add_dims(1);
  value->mutable_t()->add_float_data(1.0f);
  b.node("Mul", {"x", "ones"}, {"z"}, "mask");
  b.node("Identity", {"bias"}, {"bias_id"}, "bias_identity");
  b.node("Add", {"y2", "bias_id"}, {"p"}, "add_bias");
  b.node("Relu", {"x"}, {"unused"}, "dead_relu");
  return b;
}

std::vector<std::string> node_ops(const Graph& graph) {
  std::vector<std::string> ops;
  for (const Node& node : graph.nodes) ops.push_back(node.op);
  return ops;
}

TEST(ImportFolding, ShapeChainsBecomeConstants) {
  std::string path = shape_chain_model().save(test_dir() / "chain.onnx");
  ImportOptions options;
  options.batch = 6;
  auto graph = import_model(path, options);
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();
  EXPECT_EQ(node_ops(*graph), (std::vector<std::string>{"Reshape", "Add", "Mul", "Identity", "Add"}));
  ASSERT_TRUE(graph->validate().ok());

  const Node& reshape = graph->nodes[0];
  ASSERT_TRUE(graph->is_initializer(reshape.inputs[1]));
  EXPECT_EQ(graph->initializers.at(reshape.inputs[1]).as_ints().value(), (std::vector<int64_t>{6, -1}));
  EXPECT_EQ(graph->find_value("y")->static_shape(), (Shape{6, 60}));
  EXPECT_EQ(graph->find_value("p")->static_shape(), (Shape{6, 60}));
  EXPECT_EQ(graph->find_value("z")->static_shape(), (Shape{6, 3, 4, 5}));

  const TensorData& ramp = graph->initializers.at("ramp");
  ASSERT_EQ(ramp.shape, (Shape{60}));
  EXPECT_FLOAT_EQ(ramp.data<float>()[0], 0.0f);
  EXPECT_FLOAT_EQ(ramp.data<float>()[59], 29.5f);
  const TensorData& ones = graph->initializers.at("ones");
  EXPECT_EQ(ones.shape, (Shape{3, 4, 5}));
  EXPECT_FLOAT_EQ(ones.data<float>()[59], 1.0f);

  // Folded float constants are not parameters; the file's float initializer is.
  EXPECT_EQ(graph->parameters, (std::set<std::string>{"bias"}));
  // Dead nodes and the values only they used are gone.
  EXPECT_EQ(graph->find_value("unused"), nullptr);
  EXPECT_EQ(graph->find_value("shape"), nullptr);
  EXPECT_FALSE(graph->is_initializer("n1"));
  EXPECT_FALSE(graph->is_initializer("zero"));
  for (const auto& [name, info] : graph->values) EXPECT_TRUE(info.is_static()) << name;
}

TEST(ImportCnn, PyTorchExportBecomesStaticAndFolded) {
  std::string path = testing::cnn_model_path();
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing; run models/cnn/export.py";
  ImportOptions options;
  options.batch = 64;
  auto imported = import_model(path, options);
  ASSERT_TRUE(imported.ok()) << imported.status().to_string();
  const Graph& graph = imported.value();
  ASSERT_TRUE(graph.validate().ok());

  EXPECT_EQ(node_ops(graph), (std::vector<std::string>{"Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Reshape",
                                                       "Gemm", "Relu", "Gemm"}));
  for (const Node& node : graph.nodes)
    for (const char* op : {"Shape", "Gather", "Concat", "Unsqueeze", "Constant"}) EXPECT_NE(node.op, op);
  for (const auto& [name, info] : graph.values) EXPECT_TRUE(info.is_static()) << name << " " << info.shape_string();
  ASSERT_EQ(graph.outputs, (std::vector<std::string>{"logits"}));
  EXPECT_EQ(graph.find_value("logits")->static_shape(), (Shape{64, 10}));

  const Node& reshape = graph.nodes[6];
  ASSERT_TRUE(graph.is_initializer(reshape.inputs[1]));
  EXPECT_EQ(graph.initializers.at(reshape.inputs[1]).as_ints().value(), (std::vector<int64_t>{64, -1}));
  EXPECT_EQ(graph.find_value(reshape.outputs[0])->static_shape(), (Shape{64, 3136}));

  int64_t params = 0;
  for (const std::string& name : graph.parameters) params += graph.initializers.at(name).numel();
  EXPECT_EQ(graph.parameters.size(), 8u);
  EXPECT_EQ(params, 421642);  // 32*9+32 + 64*32*9+64 + 3136*128+128 + 128*10+10

  // Conv FLOPs by hand: 2 per multiply-add plus one bias add per output element.
  auto conv_cost = [&](size_t index) { return find_op("", "Conv", 17)->cost(graph.nodes[index], graph); };
  double conv1_out = 64.0 * 32 * 28 * 28, conv2_out = 64.0 * 64 * 14 * 14;
  OpCost conv1 = conv_cost(0), conv2 = conv_cost(3);
  EXPECT_DOUBLE_EQ(conv1.flops, 2 * conv1_out * (1 * 3 * 3) + conv1_out);    // 30,507,008
  EXPECT_DOUBLE_EQ(conv2.flops, 2 * conv2_out * (32 * 3 * 3) + conv2_out);   // 463,224,832
  EXPECT_DOUBLE_EQ(conv1.flops, 30507008.0);
  EXPECT_DOUBLE_EQ(conv2.flops, 463224832.0);
  EXPECT_DOUBLE_EQ(conv2.backward_input_flops, 2 * conv2_out * 32 * 9);
  EXPECT_DOUBLE_EQ(conv2.backward_weight_flops, 2 * conv2_out * 32 * 9 + conv2_out);
}

TEST(ImportCnn, ShapeOptionOverridesBatch) {
  ImportOptions options;
  ASSERT_TRUE(add_shape_option("input=8x1x28x28", options).ok());
  options.batch = 64;  // --shape wins: the input's dim 0 is no longer symbolic
  auto graph = import_model(testing::cnn_model_path(), options);
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();
  EXPECT_EQ(graph->find_value("logits")->static_shape(), (Shape{8, 10}));
}

}  // namespace
}  // namespace ravnest::fe
