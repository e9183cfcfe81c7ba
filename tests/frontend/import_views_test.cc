// import_model with WeightViews: the Graph is import_model's, except that every
// parameter whose bytes stay in the mapped model file has empty bytes, and its
// view holds exactly the bytes import_model reads; state, dead and small
// initializers are handled as import_model handles them.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "frontend/import.h"
#include "tests/frontend/model_builder.h"

namespace ravnest::fe {
namespace {

TensorData pattern(const Shape& shape, int seed) {
  std::vector<float> values(static_cast<size_t>(numel(shape)));
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = static_cast<float>((i * 7 + static_cast<size_t>(seed)) % 101) - 50;
  return TensorData::from_floats(values, shape);
}

// x[2,128] -> MatMul(w[128,256]) -> y; u[2,16384] -> BatchNormalization(scale, bias, mean, var) -> v;
// plus a large unused initializer and a small bias added to y. w, scale, bias, mean, var and unused are
// 64 KiB or more (read out of place); mean and var become running state.
std::string write_model(const std::filesystem::path& dir) {
  testing::ModelBuilder b;
  b.input("x", {"2", "128"}).input("u", {"2", "16384"}).output("z").output("v");
  b.initializer("w", pattern({128, 256}, 1));
  b.initializer("small", pattern({256}, 2));
  b.initializer("unused", pattern({20000}, 3));
  const char* bn[] = {"scale", "bias", "mean", "var"};
  for (int i = 0; i < 4; ++i) b.initializer(bn[i], pattern({16384}, 10 + i));
  b.node("MatMul", {"x", "w"}, {"y"});
  b.node("Add", {"y", "small"}, {"z"});
  b.node("BatchNormalization", {"u", "scale", "bias", "mean", "var"}, {"v"});
  // Old exports list initializers among the graph inputs too.
  auto* listed = b.proto().mutable_graph()->add_input();
  listed->set_name("w");
  listed->mutable_type()->mutable_tensor_type()->set_elem_type(1);
  auto* shape = listed->mutable_type()->mutable_tensor_type()->mutable_shape();
  for (int64_t d : {128, 256}) shape->add_dim()->set_dim_value(d);
  return b.save(dir / "views_model.onnx");
}

TEST(ImportViews, LargeParametersAreViewsOfTheFileAndTheRestIsImportModels) {
  const std::string path = write_model(testing::test_dir());
  Result<Graph> plain = import_model(path, ImportOptions{});
  ASSERT_TRUE(plain.ok()) << plain.status().to_string();
  WeightViews views;
  Result<Graph> viewed = import_model(path, ImportOptions{}, &views);
  ASSERT_TRUE(viewed.ok()) << viewed.status().to_string();

  ASSERT_NE(views.file, nullptr);
  std::vector<std::string> names;
  for (const auto& [name, bytes] : views.bytes) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"bias", "scale", "w"}));
  EXPECT_EQ(viewed->parameters, plain->parameters);
  EXPECT_EQ(viewed->state, (std::set<std::string>{"mean", "var"}));
  EXPECT_EQ(viewed->state, plain->state);
  EXPECT_EQ(viewed->inputs, plain->inputs);
  EXPECT_EQ(viewed->inputs, (std::vector<std::string>{"x", "u"}));
  EXPECT_EQ(viewed->outputs, plain->outputs);
  EXPECT_EQ(viewed->nodes.size(), plain->nodes.size());
  ASSERT_EQ(viewed->initializers.size(), plain->initializers.size());
  EXPECT_EQ(viewed->initializers.count("unused"), 0u);
  for (const auto& [name, tensor] : plain->initializers) {
    const TensorData& other = viewed->initializers.at(name);
    EXPECT_EQ(other.dtype, tensor.dtype) << name;
    EXPECT_EQ(other.shape, tensor.shape) << name;
    auto view = views.bytes.find(name);
    if (view == views.bytes.end()) {
      EXPECT_EQ(other.bytes, tensor.bytes) << name;
      continue;
    }
    EXPECT_TRUE(other.bytes.empty()) << name;
    ASSERT_EQ(view->second.size(), tensor.bytes.size()) << name;
    EXPECT_TRUE(std::equal(view->second.begin(), view->second.end(), tensor.bytes.begin())) << name;
  }
  ASSERT_EQ(viewed->values.size(), plain->values.size());
  for (const auto& [name, info] : plain->values) {
    const ValueInfo* other = viewed->find_value(name);
    ASSERT_NE(other, nullptr) << name;
    EXPECT_EQ(other->shape_string(), info.shape_string()) << name;
    EXPECT_EQ(other->dtype, info.dtype) << name;
  }
}

TEST(ImportViews, ViewsOutliveTheGraphAndCopiesShareTheMapping) {
  const std::string path = write_model(testing::test_dir());
  WeightViews copy;
  {
    WeightViews views;
    Result<Graph> viewed = import_model(path, ImportOptions{}, &views);
    ASSERT_TRUE(viewed.ok()) << viewed.status().to_string();
    copy = views;
  }
  ASSERT_NE(copy.file, nullptr);
  const std::span<const uint8_t> w = copy.bytes.at("w");
  ASSERT_EQ(w.size(), 128u * 256u * 4u);
  const TensorData expected = pattern({128, 256}, 1);
  EXPECT_TRUE(std::equal(w.begin(), w.end(), expected.bytes.begin()));
  EXPECT_GE(w.data(), copy.file->data());
  EXPECT_LE(w.data() + w.size(), copy.file->data() + copy.file->size());
}

TEST(ImportViews, ModelWithoutLargeWeightsHasNoViews) {
  const auto dir = testing::test_dir();
  testing::ModelBuilder b;
  b.input("x", {"2", "4"}).output("y");
  b.initializer("w", pattern({4, 3}, 1));
  b.node("MatMul", {"x", "w"}, {"y"});
  const std::string path = b.save(dir / "small.onnx");
  WeightViews views;
  Result<Graph> viewed = import_model(path, ImportOptions{}, &views);
  ASSERT_TRUE(viewed.ok()) << viewed.status().to_string();
  EXPECT_EQ(views.file, nullptr);
  EXPECT_TRUE(views.bytes.empty());
  EXPECT_EQ(viewed->initializers.at("w").bytes.size(), 12u * 4u);
}

}  // namespace
}  // namespace ravnest::fe
