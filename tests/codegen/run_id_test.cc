// compile_model's run id is a digest of the bundles it wrote: the same compile
// gives the same id in every manifest; one changed weight byte of the model, or a
// changed option, gives another; where the bundles are written does not matter.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "codegen/compile.h"
#include "frontend/model_reader.h"
#include "runtime/bundle.h"

namespace ravnest::cg {
namespace {

namespace fs = std::filesystem;

class RunId : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ravnest-run-id-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  CompileOptions options(const std::string& model, const std::string& out) const {
    CompileOptions o;
    o.model_path = model;
    o.out_dir = (dir_ / out).string();
    o.stages = 2;
    o.batch = 8;
    o.microbatches = 4;
    return o;
  }
  // The run id of a compile, after checking that every manifest carries it.
  std::string compile(const CompileOptions& o) const {
    std::ostringstream report;
    Result<CompileSummary> summary = compile_model(o, report);
    EXPECT_TRUE(summary.ok()) << summary.status().to_string();
    if (!summary.ok()) return "";
    EXPECT_EQ(summary->run_id.size(), 16u);
    for (const std::string& node : summary->node_dirs) {
      Result<rt::Bundle> bundle = rt::load_bundle(node);
      EXPECT_TRUE(bundle.ok()) << bundle.status().to_string();
      if (bundle.ok()) {
        EXPECT_EQ(bundle->manifest.run_id, summary->run_id) << node;
      }
    }
    return summary->run_id;
  }

  fs::path dir_;
  const std::string model_ = std::string(RAVNEST_SOURCE_DIR) + "/models/gpt2_small/gpt2_small_small.onnx";
};

TEST_F(RunId, SameBundlesSameIdWhereverWritten) {
  const std::string a = compile(options(model_, "a"));
  const std::string b = compile(options(model_, "b"));
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, b);
  CompileOptions other_lr = options(model_, "c");
  other_lr.training.optimizer.lr *= 2;
  EXPECT_NE(compile(other_lr), a);
}

TEST_F(RunId, OneWeightByteChangesIt) {
  // A copy of the model under the same file name with one byte of a large weight changed.
  fe::WeightViews views;
  Result<onnx::ModelProto> read = fe::read_model_mapped(model_, &views);
  ASSERT_TRUE(read.ok()) << read.status().to_string();
  ASSERT_FALSE(views.bytes.empty()) << "the model has no weight read out of place";
  const std::span<const uint8_t> weight = views.bytes.begin()->second;
  const size_t offset = static_cast<size_t>(weight.data() - views.file->data()) + weight.size() / 2;
  std::string bytes(reinterpret_cast<const char*>(views.file->data()), views.file->size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x40);
  fs::create_directories(dir_ / "changed");
  const std::string changed = (dir_ / "changed" / fs::path(model_).filename()).string();
  std::ofstream(changed, std::ios::binary) << bytes;

  const std::string original = compile(options(model_, "a"));
  const std::string modified = compile(options(changed, "b"));
  EXPECT_FALSE(original.empty());
  EXPECT_FALSE(modified.empty());
  EXPECT_NE(original, modified);
}

}  // namespace
}  // namespace ravnest::cg
