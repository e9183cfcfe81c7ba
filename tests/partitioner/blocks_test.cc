// LLM-aware splitting: on a hand-built transformer the cut points are the residual
// stream, the blocks repeat with period two segments (attention half, MLP half), stages
// change only at block boundaries with the embedding first and the LM head last, and
// the embedding tied to the LM head is reported. The committed language models are
// checked the same way when they import.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <set>

#include "frontend/import.h"
#include "partitioner/blocks.h"

namespace ravnest::part {
namespace {

constexpr int64_t kBatch = 2, kSeq = 4, kHidden = 8, kVocab = 16;

class TinyTransformer {
 public:
  explicit TinyTransformer(int blocks) {
    g_.name = "tiny_transformer";
    g_.opset = 17;
    g_.inputs = {"ids", "labels"};
    g_.set_value(ValueInfo::of("ids", DType::kI64, {kBatch, kSeq}));
    g_.set_value(ValueInfo::of("labels", DType::kI64, {kBatch * kSeq}));
    param("wte", {kVocab, kHidden});
    std::string x = node("Gather", {"wte", "ids"}, act("emb"));
    for (int b = 0; b < blocks; ++b) {
      const std::string p = "b" + std::to_string(b) + ".";
      std::string ln1 = layer_norm(p + "ln1", x);
      std::string s = node("MatMul", {ln1, param(p + "wa", {kHidden, kHidden})}, act(p + "scores"));
      std::string pr = node("Softmax", {s}, act(p + "probs"));
      std::string a = node("MatMul", {pr, param(p + "wo", {kHidden, kHidden})}, act(p + "attn"));
      std::string h = node("Add", {x, a}, act(p + "h"));
      std::string ln2 = layer_norm(p + "ln2", h);
      std::string m1 = node("MatMul", {ln2, param(p + "w1", {kHidden, 4 * kHidden})}, act(p + "m1", 4 * kHidden));
      std::string e = node("Erf", {m1}, act(p + "erf", 4 * kHidden));
      std::string gl = node("Mul", {m1, e}, act(p + "gelu", 4 * kHidden));
      std::string m2 = node("MatMul", {gl, param(p + "w2", {4 * kHidden, kHidden})}, act(p + "m2"));
      x = node("Add", {h, m2}, act(p + "out"));
      block_starts_.push_back(p + "ln1");
    }
    std::string lnf = layer_norm("lnf", x);
    block_starts_.push_back("lnf");
    // The LM head reads the embedding matrix (tied weights) through a Transpose.
    g_.set_value(ValueInfo::of("wte_t", DType::kF32, {kHidden, kVocab}));
    Node t;
    t.name = "wte_t";
    t.op = "Transpose";
    t.inputs = {"wte"};
    t.outputs = {"wte_t"};
    t.attrs["perm"] = std::vector<int64_t>{1, 0};
    g_.nodes.push_back(t);
    std::string logits = node("MatMul", {lnf, "wte_t"}, act("logits", kVocab));
    g_.initializers["flat_shape"] = TensorData::from_ints({kBatch * kSeq, kVocab}, {2});
    g_.set_value(ValueInfo::of("flat_shape", DType::kI64, {2}));
    g_.set_value(ValueInfo::of("flat", DType::kF32, {kBatch * kSeq, kVocab}));
    node("Reshape", {logits, "flat_shape"}, "flat");
    g_.set_value(ValueInfo::of("loss", DType::kF32, {}));
    node("SoftmaxCrossEntropyLoss", {"flat", "labels"}, "loss");
    g_.outputs = {"loss"};
  }
  const Graph& graph() const { return g_; }
  const std::vector<std::string>& block_starts() const { return block_starts_; }

 private:
  std::string param(const std::string& name, const Shape& shape) {
    std::vector<float> values(static_cast<size_t>(numel(shape)), 0.01f);
    g_.initializers[name] = TensorData::from_floats(values, shape);
    g_.set_value(ValueInfo::of(name, DType::kF32, shape));
    g_.parameters.insert(name);
    return name;
  }
  std::string act(const std::string& name, int64_t width = kHidden) {
    g_.set_value(ValueInfo::of(name, DType::kF32, {kBatch, kSeq, width}));
    return name;
  }
  std::string node(const std::string& op, std::vector<std::string> inputs, const std::string& output) {
    Node n;
    n.name = output;
    n.op = op;
    n.inputs = std::move(inputs);
    n.outputs = {output};
    g_.nodes.push_back(std::move(n));
    return output;
  }
  std::string layer_norm(const std::string& name, const std::string& x) {
    Node n;
    n.name = name;
    n.op = "LayerNormalization";
    n.inputs = {x, param(name + ".g", {kHidden}), param(name + ".b", {kHidden})};
    n.outputs = {act(name)};
    n.attrs["axis"] = int64_t{-1};
    g_.nodes.push_back(std::move(n));
    return name;
  }

  Graph g_;
  std::vector<std::string> block_starts_;
};

int index_of(const Graph& g, const std::string& name) {
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (g.nodes[i].name == name) return static_cast<int>(i);
  return -1;
}

Pipeline machines(const std::vector<double>& speeds) {
  Pipeline p;
  for (size_t s = 0; s < speeds.size(); ++s) p.machines.push_back({"m" + std::to_string(s), speeds[s], 0, 1});
  p.link_bandwidth.assign(speeds.size() - 1, 1e9);
  return p;
}

// Stage changes along `blocks.order` happen only at block boundaries.
void expect_cuts_at_boundaries(const BlockStructure& blocks, const std::vector<int>& stage) {
  std::set<int> allowed(blocks.boundaries.begin(), blocks.boundaries.end());
  int changes = 0;
  for (size_t p = 1; p < blocks.order.size(); ++p) {
    int a = stage[static_cast<size_t>(blocks.order[p - 1])], b = stage[static_cast<size_t>(blocks.order[p])];
    EXPECT_LE(a, b) << "stage goes down at position " << p;
    if (a != b) {
      ++changes;
      EXPECT_TRUE(allowed.count(static_cast<int>(p))) << "cut at position " << p << " is not a block boundary";
    }
  }
  EXPECT_GT(changes, 0);
}

TEST(Blocks, FindsResidualCutsAndRepeatedBlocks) {
  TinyTransformer model(4);
  const Graph& g = model.graph();
  ASSERT_TRUE(g.validate().ok()) << g.validate().message();
  auto blocks = find_blocks(g);
  ASSERT_TRUE(blocks.ok()) << blocks.status().message();
  EXPECT_EQ(blocks->period, 2);  // attention half + MLP half
  EXPECT_EQ(blocks->num_blocks, 4);
  EXPECT_EQ(blocks->first_block, 1);  // after the embedding segment
  // Boundaries: where each block's first LayerNorm sits, and the final LayerNorm.
  std::vector<int> expected;
  for (const std::string& name : model.block_starts()) {
    int node = index_of(g, name);
    for (size_t p = 0; p < blocks->order.size(); ++p)
      if (blocks->order[p] == node) expected.push_back(static_cast<int>(p));
  }
  EXPECT_EQ(blocks->boundaries, expected);
  // Every cut carries the residual stream (or the head's chain), never a block-internal value.
  for (const CutPoint& c : blocks->cuts)
    EXPECT_TRUE(c.value == "emb" || c.value.find(".h") != std::string::npos || c.value.find(".out") != std::string::npos ||
                c.value == "lnf" || c.value == "logits" || c.value == "flat")
        << c.value;
  // The constant-only Transpose of the embedding was moved next to the LM head.
  EXPECT_EQ(blocks->order[blocks->order.size() - 4], index_of(g, "wte_t"));
}

TEST(Blocks, CutsOnlyAtBlockBoundariesAndReportsTheTiedEmbedding) {
  TinyTransformer model(6);
  const Graph& g = model.graph();
  for (const auto& speeds : std::vector<std::vector<double>>{{1, 1, 1}, {1, 2, 4}, {4, 1}}) {
    auto split = partition_by_blocks(g, machines(speeds));
    ASSERT_TRUE(split.ok()) << split.status().message();
    const std::vector<int>& stage = split->partition.stage_of_node;
    const int last = static_cast<int>(speeds.size()) - 1;
    expect_cuts_at_boundaries(split->blocks, stage);
    EXPECT_EQ(stage[static_cast<size_t>(index_of(g, "emb"))], 0);
    EXPECT_EQ(stage[static_cast<size_t>(index_of(g, "logits"))], last);
    EXPECT_EQ(stage[static_cast<size_t>(index_of(g, "loss"))], last);
    ASSERT_EQ(split->tied.size(), 1u);
    EXPECT_EQ(split->tied[0].name, "wte");
    EXPECT_EQ(split->tied[0].stages, (std::vector<int>{0, last}));
    EXPECT_NE(split->partition.method.find("blocks (6 x 2 segments)"), std::string::npos) << split->partition.method;
    // The graph reordered for codegen keeps a valid topological order.
    auto ordered = order_by_stage(g, stage);
    ASSERT_TRUE(ordered.ok()) << ordered.status().message();
    EXPECT_TRUE(std::is_sorted(ordered->second.begin(), ordered->second.end()));
  }
}

TEST(Blocks, FasterMachinesGetMoreBlocks) {
  TinyTransformer model(12);
  auto split = partition_by_blocks(model.graph(), machines({1, 3}));
  ASSERT_TRUE(split.ok()) << split.status().message();
  int first = 0, second = 0;
  for (int s : split->partition.stage_of_node) (s == 0 ? first : second) += 1;
  EXPECT_GT(second, 2 * first);
}

TEST(Blocks, TooManyStagesIsAnError) {
  TinyTransformer model(1);
  Pipeline p = machines(std::vector<double>(30, 1.0));
  auto split = partition_by_blocks(model.graph(), p);
  ASSERT_FALSE(split.ok());
  EXPECT_NE(split.status().message().find("use at most"), std::string::npos) << split.status().message();
}

// The committed language models, when present and importable.
TEST(Blocks, CommittedLanguageModels) {
  const std::string root = std::string(RAVNEST_SOURCE_DIR) + "/models/";
  int checked = 0;
  for (const char* path : {"gpt2_small/gpt2_small_small.onnx", "gpt_sorter/gpt_sorter_small.onnx",
                           "bert/bert_small.onnx", "llama_block/llama_block_small.onnx"}) {
    if (!std::filesystem::exists(root + path)) {
      std::printf("[ skip ] %s: not committed\n", path);
      continue;
    }
    fe::ImportOptions options;
    options.batch = 2;
    auto g = fe::import_model(root + path, options);
    if (!g.ok()) {
      std::printf("[ skip ] %s: import failed: %s\n", path, g.status().message().c_str());
      continue;
    }
    auto blocks = find_blocks(*g);
    ASSERT_TRUE(blocks.ok()) << path << ": " << blocks.status().message();
    std::printf("[ info ] %s: %zu nodes, %zu single-tensor cuts, %d blocks of %d segments\n", path, g->nodes.size(),
                blocks->cuts.size(), blocks->num_blocks, blocks->period);
    EXPECT_GE(blocks->num_blocks, 2) << path;
    auto split = partition_by_blocks(*g, machines({1, 2}));
    if (!split.ok()) {
      std::printf("[ skip ] %s: %s\n", path, split.status().message().c_str());
      continue;
    }
    expect_cuts_at_boundaries(split->blocks, split->partition.stage_of_node);
    for (const TiedParameter& t : split->tied) std::printf("[ info ]   tied %s across %zu stages\n", t.name.c_str(), t.stages.size());
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no committed language model imported";
}

// Every committed model, through the general DAG partitioner on speeds 1:2:4: acyclic,
// every node once, every stage used (re-checked by evaluate_partition).
TEST(Blocks, CommittedModelsThroughTheDagPartitioner) {
  const std::string root = std::string(RAVNEST_SOURCE_DIR) + "/models/";
  int checked = 0;
  for (const char* path : {"cnn/cnn.onnx", "inception_v3/inception_v3_small.onnx", "resnet50/resnet50_small.onnx",
                           "gpt2_small/gpt2_small_small.onnx", "bert/bert_small.onnx",
                           "llama_block/llama_block_small.onnx"}) {
    if (!std::filesystem::exists(root + path)) continue;
    fe::ImportOptions options;
    options.batch = 2;
    auto g = fe::import_model(root + path, options);
    if (!g.ok()) {
      std::printf("[ skip ] %s: import failed: %s\n", path, g.status().message().c_str());
      continue;
    }
    auto dag = dag_from_graph(*g);
    ASSERT_TRUE(dag.ok()) << path << ": " << dag.status().message();
    Pipeline p = machines({1, 2, 4});
    auto split = partition_dag(*dag, p);
    ASSERT_TRUE(split.ok()) << path << ": " << split.status().message();
    auto again = evaluate_partition(*dag, p, split->stage_of_node);
    ASSERT_TRUE(again.ok()) << path << ": " << again.status().message();
    auto ordered = order_by_stage(*g, split->stage_of_node);
    ASSERT_TRUE(ordered.ok()) << path << ": " << ordered.status().message();
    std::printf("[ info ] %s: %zu nodes, stage times %.3g %.3g %.3g (%s)\n", path, g->nodes.size(),
                split->stage_time[0], split->stage_time[1], split->stage_time[2], split->method.c_str());
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no committed model imported";
}

}  // namespace
}  // namespace ravnest::part
