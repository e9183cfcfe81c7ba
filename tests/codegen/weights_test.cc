// compile_model's bundles carry the model's weights bit for bit: the large ones are
// held out of the graph during the calibration rounds and written from views of
// their bytes, the small ones travel with the stage programs; every parameter
// lands in the bundle of each stage that reads it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "codegen/compile.h"
#include "frontend/import.h"
#include "runtime/bundle.h"

namespace ravnest::cg {
namespace {

namespace fs = std::filesystem;

TEST(CompileWeights, BundlesHoldTheModelsWeightsBitForBit) {
  const fs::path dir = fs::temp_directory_path() / ("ravnest-weights-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  CompileOptions o;
  o.model_path = std::string(RAVNEST_SOURCE_DIR) + "/models/gpt2_small/gpt2_small_small.onnx";
  o.out_dir = (dir / "out").string();
  o.devices_path = std::string(RAVNEST_SOURCE_DIR) + "/models/devices/three_laptops.json";  // calibration rounds
  o.device_clusters = 1;
  o.device_stages = 3;
  o.batch = 8;
  o.microbatches = 4;
  std::ostringstream report;
  Result<CompileSummary> summary = compile_model(o, report);
  ASSERT_TRUE(summary.ok()) << summary.status().to_string();
  ASSERT_EQ(summary->node_dirs.size(), 3u);

  fe::ImportOptions io;
  io.batch = 2;
  Result<Graph> model = fe::import_model(o.model_path, io);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  std::set<std::string> seen;
  int large = 0;
  for (const std::string& node : summary->node_dirs) {
    Result<rt::Bundle> bundle = rt::load_bundle(node);
    ASSERT_TRUE(bundle.ok()) << bundle.status().to_string();
    for (const auto& [name, tensor] : bundle->weights) {
      auto it = model->initializers.find(name);
      ASSERT_NE(it, model->initializers.end()) << name << " in " << node << " is not a model initializer";
      const TensorData& want = it->second;
      ASSERT_EQ(tensor.shape(), want.shape) << name;
      ASSERT_EQ(tensor.bytes(), want.bytes.size()) << name;
      EXPECT_EQ(std::memcmp(tensor.raw(), want.bytes.data(), want.bytes.size()), 0) << name << " in " << node;
      large += want.numel() > 1024;
      seen.insert(name);
    }
  }
  EXPECT_GT(large, 0) << "no weight took the held-out path";
  for (const std::string& p : model->parameters) EXPECT_TRUE(seen.count(p)) << "parameter " << p << " in no bundle";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ravnest::cg
