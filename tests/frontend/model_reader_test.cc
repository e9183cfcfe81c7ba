// read_model_for_import: large inline float weights become external data in the
// file itself, the Graph is bit for bit the one read_model_proto gives, and files
// it cannot rewrite get read_model_proto's errors. read_model_mapped: the moved
// weights' views hold their bytes, inside the mapping.
#include "frontend/model_reader.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/onnx_graph.h"
#include "tests/frontend/model_builder.h"

namespace ravnest::fe {
namespace {

void add_raw(onnx::GraphProto* g, const std::string& name, int type, int64_t count, size_t width, int seed) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(type);
  t->add_dims(count);
  std::string bytes(static_cast<size_t>(count) * width, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 131 + static_cast<size_t>(seed)) >> 3);
  t->set_raw_data(bytes);
}

// A model whose initializers take every path: large float raw (moved), small float raw,
// large int64 raw, float_data (all three kept inline).
std::string write_model(const std::filesystem::path& dir) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  auto* g = model.mutable_graph();
  g->set_name("reader");
  add_raw(g, "big", onnx::TensorProto::FLOAT, 100000, 4, 1);
  add_raw(g, "small", onnx::TensorProto::FLOAT, 10, 4, 2);
  add_raw(g, "ints", onnx::TensorProto::INT64, 20000, 8, 3);
  add_raw(g, "big2", onnx::TensorProto::FLOAT, 30000, 4, 4);
  auto* listed = g->add_initializer();
  listed->set_name("listed");
  listed->set_data_type(onnx::TensorProto::FLOAT);
  listed->add_dims(3);
  for (float v : {1.5f, -2.0f, 3.25f}) listed->add_float_data(v);
  const std::string path = (dir / "reader_model.onnx").string();
  std::ofstream out(path, std::ios::binary);
  out << model.SerializeAsString();
  return path;
}

TEST(ModelReader, LargeFloatWeightsAreReadOutOfPlaceAndGiveTheSameGraph) {
  const auto dir = testing::test_dir();
  const std::string path = write_model(dir);
  Result<onnx::ModelProto> lean = read_model_for_import(path);
  ASSERT_TRUE(lean.ok()) << lean.status().to_string();
  for (const auto& init : lean->graph().initializer()) {
    const bool moved = init.name() == "big" || init.name() == "big2";
    EXPECT_EQ(init.data_location() == onnx::TensorProto::EXTERNAL, moved) << init.name();
    EXPECT_EQ(init.has_raw_data(), init.name() != "listed" && !moved) << init.name();
  }
  Result<onnx::ModelProto> plain = read_model_proto(path);
  ASSERT_TRUE(plain.ok());
  Result<Graph> from_lean = graph_from_proto(*lean, dir.string());
  Result<Graph> from_plain = graph_from_proto(*plain, dir.string());
  ASSERT_TRUE(from_lean.ok()) << from_lean.status().to_string();
  ASSERT_TRUE(from_plain.ok());
  ASSERT_EQ(from_lean->initializers.size(), 5u);
  for (const auto& [name, tensor] : from_plain->initializers) {
    const TensorData& other = from_lean->initializers.at(name);
    EXPECT_EQ(other.dtype, tensor.dtype) << name;
    EXPECT_EQ(other.shape, tensor.shape) << name;
    EXPECT_EQ(other.bytes, tensor.bytes) << name;
  }
}

TEST(ModelReader, MappedReadViewsTheMovedWeightsInTheFile) {
  const auto dir = testing::test_dir();
  const std::string path = write_model(dir);
  Result<onnx::ModelProto> plain = read_model_proto(path);
  ASSERT_TRUE(plain.ok());
  WeightViews weights;
  Result<onnx::ModelProto> lean = read_model_mapped(path, &weights);
  ASSERT_TRUE(lean.ok()) << lean.status().to_string();
  ASSERT_NE(weights.file, nullptr);
  ASSERT_EQ(weights.bytes.size(), 2u);
  for (const auto& init : plain->graph().initializer()) {
    auto view = weights.bytes.find(init.name());
    if (init.name() != "big" && init.name() != "big2") {
      EXPECT_EQ(view, weights.bytes.end()) << init.name();
      continue;
    }
    ASSERT_NE(view, weights.bytes.end()) << init.name();
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(view->second.data()), view->second.size()), init.raw_data())
        << init.name();
    EXPECT_GE(view->second.data(), weights.file->data());
    EXPECT_LE(view->second.data() + view->second.size(), weights.file->data() + weights.file->size());
  }
}

TEST(ModelReader, MappedReadViewsNoNameTwoInitializersShare) {
  const auto dir = testing::test_dir();
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  auto* g = model.mutable_graph();
  add_raw(g, "twice", onnx::TensorProto::FLOAT, 20000, 4, 1);
  add_raw(g, "twice", onnx::TensorProto::FLOAT, 20000, 4, 2);
  add_raw(g, "once", onnx::TensorProto::FLOAT, 20000, 4, 3);
  const std::string path = (dir / "twice.onnx").string();
  std::ofstream(path, std::ios::binary) << model.SerializeAsString();
  WeightViews weights;
  Result<onnx::ModelProto> lean = read_model_mapped(path, &weights);
  ASSERT_TRUE(lean.ok()) << lean.status().to_string();
  EXPECT_EQ(weights.bytes.count("twice"), 0u);
  EXPECT_EQ(weights.bytes.count("once"), 1u);
}

TEST(ModelReader, FilesItCannotRewriteGetTheOrdinaryErrors) {
  const auto dir = testing::test_dir();
  const std::string path = write_model(dir);
  // Cut inside the large weight: the rewrite fails, and so does the ordinary parse, with its message.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const std::string cut = (dir / "cut.onnx").string();
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  Result<onnx::ModelProto> lean = read_model_for_import(cut);
  Result<onnx::ModelProto> plain = read_model_proto(cut);
  ASSERT_FALSE(lean.ok());
  ASSERT_FALSE(plain.ok());
  EXPECT_EQ(lean.status().message(), plain.status().message());

  Result<onnx::ModelProto> missing = read_model_for_import((dir / "nope.onnx").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  WeightViews weights;
  weights.bytes["stale"] = {};
  Result<onnx::ModelProto> missing_mapped = read_model_mapped((dir / "nope.onnx").string(), &weights);
  ASSERT_FALSE(missing_mapped.ok());
  EXPECT_EQ(missing_mapped.status().code(), Code::kNotFound);
  EXPECT_TRUE(weights.bytes.empty());
}

}  // namespace
}  // namespace ravnest::fe
