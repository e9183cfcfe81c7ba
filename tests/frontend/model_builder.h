// Test helper: builds small ONNX models in C++ (no Python), writes them to a
// per-test temporary folder, and locates the repository's model files.
#pragma once

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/graph.h"

namespace ravnest::fe::testing {

// A fresh folder for the running test, removed and recreated on each call.
inline std::filesystem::path test_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::temp_directory_path() /
             ("ravnest-fe-" + std::to_string(::getpid()) + "-" + info->test_suite_name() + "-" + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

class ModelBuilder {
 public:
  explicit ModelBuilder(int64_t opset = 17) {
    model_.set_ir_version(8);
    auto* entry = model_.add_opset_import();
    entry->set_domain("");
    entry->set_version(opset);
    model_.mutable_graph()->set_name("test");
  }

  // dims: a number, or a symbol such as "batch".
  ModelBuilder& input(const std::string& name, const std::vector<std::string>& dims, DType dtype = DType::kF32) {
    typed(model_.mutable_graph()->add_input(), name, dims, dtype);
    return *this;
  }
  ModelBuilder& output(const std::string& name, DType dtype = DType::kF32) {
    auto* vi = model_.mutable_graph()->add_output();
    vi->set_name(name);
    vi->mutable_type()->mutable_tensor_type()->set_elem_type(static_cast<int32_t>(dtype));
    return *this;
  }
  onnx::TensorProto& initializer(const std::string& name, const TensorData& t) {
    auto* proto = model_.mutable_graph()->add_initializer();
    proto->set_name(name);
    proto->set_data_type(static_cast<int32_t>(t.dtype));
    for (int64_t d : t.shape) proto->add_dims(d);
    proto->set_raw_data(t.bytes.data(), t.bytes.size());
    return *proto;
  }
  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs, const std::string& name = "") {
    auto* np = model_.mutable_graph()->add_node();
    np->set_op_type(op);
    np->set_name(name);
    for (const auto& in : inputs) np->add_input(in);
    for (const auto& out : outputs) np->add_output(out);
    return *np;
  }
  onnx::ModelProto& proto() { return model_; }

  std::string save(const std::filesystem::path& path) const {
    std::ofstream out(path, std::ios::binary);
    model_.SerializeToOstream(&out);
    return path.string();
  }

 private:
  static void typed(onnx::ValueInfoProto* vi, const std::string& name, const std::vector<std::string>& dims,
                    DType dtype) {
    vi->set_name(name);
    auto* tensor = vi->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(static_cast<int32_t>(dtype));
    auto* shape = tensor->mutable_shape();
    for (const auto& d : dims) {
      auto* dim = shape->add_dim();
      if (!d.empty() && std::isdigit(static_cast<unsigned char>(d[0]))) dim->set_dim_value(std::stoll(d));
      else dim->set_dim_param(d);
    }
  }

  onnx::ModelProto model_;
};

inline void set_ints(onnx::NodeProto& node, const std::string& name, const std::vector<int64_t>& values) {
  auto* attr = node.add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) attr->add_ints(v);
}

inline void set_int(onnx::NodeProto& node, const std::string& name, int64_t value) {
  auto* attr = node.add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INT);
  attr->set_i(value);
}

inline TensorData filled(const Shape& shape, float value) {
  return TensorData::from_floats(std::vector<float>(static_cast<size_t>(numel(shape)), value), shape);
}

inline std::string cnn_model_path() { return std::string(RAVNEST_SOURCE_DIR) + "/models/cnn/cnn.onnx"; }

}  // namespace ravnest::fe::testing
