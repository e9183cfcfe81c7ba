// Executor and memory-plan tests: a small CNN program against a composition of the
// float64 references, arena reuse on a long chain, aliasing of shape ops, the
// planner's no-overlap invariant on random lifetimes, and feed checking.
#include <gtest/gtest.h>

#include <random>

#include "runtime/executor.h"
#include "runtime/memory_plan.h"
#include "tests/runtime/reference_ops.h"

namespace ravnest::rt {
namespace {

using ref::Vec;

Tensor f32_tensor(const Shape& shape, const Vec& values) {
  Tensor t = Tensor::empty(DType::kF32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(values[i]);
  return t;
}

Vec uniform(std::mt19937& rng, const Shape& shape) {
  std::uniform_real_distribution<double> dist(-1, 1);
  Vec v(static_cast<size_t>(numel(shape)));
  for (double& x : v) x = static_cast<float>(dist(rng));
  return v;
}

TensorData f32_data(const Shape& shape, const Vec& values) {
  return TensorData::from_floats(std::vector<float>(values.begin(), values.end()), shape);
}

// Appends a node and records the types of its outputs.
void add_node(Graph& g, const std::string& op, std::vector<std::string> inputs,
              std::vector<std::pair<std::string, Shape>> outputs, std::map<std::string, AttrValue> attrs = {},
              DType out_dtype = DType::kF32) {
  Node node;
  node.name = op + std::to_string(g.nodes.size());
  node.op = op;
  node.inputs = std::move(inputs);
  node.attrs = std::move(attrs);
  for (const auto& [name, shape] : outputs) {
    node.outputs.push_back(name);
    g.set_value(ValueInfo::of(name, name == "indices" ? DType::kI64 : out_dtype, shape));
  }
  g.nodes.push_back(std::move(node));
}

// Initializers carry a value entry too (Graph::validate requires one).
void add_initializer(Graph& g, const std::string& name, TensorData data) {
  g.set_value(ValueInfo::of(name, data.dtype, data.shape));
  g.initializers[name] = std::move(data);
}

void add_input(Graph& g, const std::string& name, const Shape& shape) {
  g.inputs.push_back(name);
  g.set_value(ValueInfo::of(name, DType::kF32, shape));
}

void expect_near_all(const Tensor& got, const Vec& want, double tol) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got.data<float>()[i], want[i], tol) << "element " << i;
}

// Conv -> Relu -> MaxPool -> Flatten -> Gemm, weights as initializers.
TEST(ExecutorTest, SmallCnnMatchesReferenceComposition) {
  std::mt19937 rng(3);
  const Shape xs = {2, 1, 8, 8}, ws = {4, 1, 3, 3}, fs = {10, 64};
  const Vec w = uniform(rng, ws), b = uniform(rng, {4}), fw = uniform(rng, fs), fb = uniform(rng, {10});
  Graph g;
  g.name = "cnn";
  add_input(g, "x", xs);
  add_initializer(g, "w", f32_data(ws, w));
  add_initializer(g, "b", f32_data({4}, b));
  add_initializer(g, "fw", f32_data(fs, fw));
  add_initializer(g, "fb", f32_data({10}, fb));
  add_node(g, "Conv", {"x", "w", "b"}, {{"c", {2, 4, 8, 8}}},
           {{"kernel_shape", std::vector<int64_t>{3, 3}}, {"pads", std::vector<int64_t>{1, 1, 1, 1}}});
  add_node(g, "Relu", {"c"}, {{"r", {2, 4, 8, 8}}});
  add_node(g, "MaxPool", {"r"}, {{"p", {2, 4, 4, 4}}, {"indices", {2, 4, 4, 4}}},
           {{"kernel_shape", std::vector<int64_t>{2, 2}}, {"strides", std::vector<int64_t>{2, 2}}});
  add_node(g, "Flatten", {"p"}, {{"f", {2, 64}}});
  add_node(g, "Gemm", {"f", "fw", "fb"}, {{"y", {2, 10}}}, {{"transB", int64_t{1}}});
  g.outputs = {"y", "indices"};

  auto exec = Executor::create(g, KernelRegistry::global());
  ASSERT_TRUE(exec.ok()) << exec.status().to_string();
  const std::vector<std::string> chosen = (*exec)->chosen_kernels();
  ASSERT_EQ(chosen.size(), 5u);
  EXPECT_EQ(chosen[0], "onednn");

  // Reference: the same composition in float64.
  const Vec x = uniform(rng, xs);
  ref::ConvAttrs ca;
  ca.pt = ca.pl = ca.pb = ca.pr = 1;
  Vec c = ref::conv(x, xs, w, ws, &b, ca);
  for (double& v : c) v = std::max(v, 0.0);
  Vec pooled = ref::maxpool(c, {2, 4, 8, 8}, ref::PoolAttrs{});
  const Vec y = ref::gemm(pooled, {2, 64}, fw, fs, &fb, {10}, false, true, 1.0, 1.0);

  TensorMap outputs;
  for (int repeat = 0; repeat < 2; ++repeat) {  // the second run reuses the arena and kernels
    Status st = (*exec)->run({{"x", f32_tensor(xs, x)}}, &outputs);
    ASSERT_TRUE(st.ok()) << st.to_string();
    expect_near_all(outputs.at("y"), y, 1e-4);
    ASSERT_EQ(outputs.at("indices").dtype(), DType::kI64);
  }
  // Outputs are fresh each run: a kept output survives the next run untouched.
  Tensor kept = outputs.at("y");
  const float first = kept.data<float>()[0];
  ASSERT_TRUE((*exec)->run({{"x", f32_tensor(xs, Vec(x.size(), 0.5))}}, &outputs).ok());
  EXPECT_EQ(kept.data<float>()[0], first);
  EXPECT_NE(outputs.at("y").raw(), kept.raw());
}

// Conv and Relu alternating over 8 nodes: buffers die early, so the arena reuses them.
TEST(ExecutorTest, MemoryPlanReusesBuffersOnAChain) {
  std::mt19937 rng(5);
  const Shape s = {1, 3, 6, 6}, ws = {3, 3, 3, 3};
  const Vec w = uniform(rng, ws);
  Graph g;
  g.name = "chain";
  add_input(g, "x", s);
  add_initializer(g, "w", f32_data(ws, w));
  std::string prev = "x";
  const int kNodes = 8;
  for (int i = 0; i < kNodes; ++i) {
    const std::string out = i + 1 == kNodes ? "y" : "t" + std::to_string(i);
    if (i % 2 == 0)
      add_node(g, "Conv", {prev, "w"}, {{out, s}},
               {{"kernel_shape", std::vector<int64_t>{3, 3}}, {"pads", std::vector<int64_t>{1, 1, 1, 1}}});
    else
      add_node(g, "Relu", {prev}, {{out, s}});
    prev = out;
  }
  g.outputs = {"y"};
  auto exec = Executor::create(g, KernelRegistry::global());
  ASSERT_TRUE(exec.ok()) << exec.status().to_string();
  const size_t one = static_cast<size_t>(numel(s)) * sizeof(float);
  EXPECT_EQ((*exec)->unplanned_bytes(), one * (kNodes - 1));
  EXPECT_LT((*exec)->arena_bytes(), (*exec)->unplanned_bytes());
  EXPECT_LE((*exec)->arena_bytes(), 2 * ((one + 63) / 64 * 64));  // a chain needs two live buffers

  Vec x = uniform(rng, s), want = x;
  ref::ConvAttrs ca;
  ca.pt = ca.pl = ca.pb = ca.pr = 1;
  for (int i = 0; i < kNodes; ++i) {
    if (i % 2 == 0) want = ref::conv(want, s, w, ws, nullptr, ca);
    else for (double& v : want) v = std::max(v, 0.0);
  }
  TensorMap outputs;
  ASSERT_TRUE((*exec)->run({{"x", f32_tensor(s, x)}}, &outputs).ok());
  expect_near_all(outputs.at("y"), want, 1e-3);
}

// A Reshape alias read late: its root buffer must stay live until the Add.
TEST(ExecutorTest, AliasedReshapeKeepsItsStorageLive) {
  Graph g;
  g.name = "alias";
  add_input(g, "x", {4, 6});
  add_initializer(g, "shape", TensorData::from_ints({24}, {1}));
  add_node(g, "Relu", {"x"}, {{"a", {4, 6}}});
  add_node(g, "Reshape", {"a", "shape"}, {{"b", {24}}});
  add_node(g, "Flatten", {"x"}, {{"xf", {4, 6}}});
  add_node(g, "Relu", {"xf"}, {{"c", {4, 6}}});
  add_node(g, "Add", {"c", "c"}, {{"d", {4, 6}}});  // differs from a, so reusing a's storage would show
  add_node(g, "Reshape", {"d", "shape"}, {{"d2", {24}}});
  add_node(g, "Add", {"b", "d2"}, {{"y", {24}}});
  g.outputs = {"y"};
  auto exec = Executor::create(g, KernelRegistry::global());
  ASSERT_TRUE(exec.ok()) << exec.status().to_string();
  std::mt19937 rng(9);
  const Vec x = uniform(rng, {4, 6});
  TensorMap outputs;
  ASSERT_TRUE((*exec)->run({{"x", f32_tensor({4, 6}, x)}}, &outputs).ok());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(outputs.at("y").data<float>()[i], 3 * std::max(x[i], 0.0), 1e-6);
}

TEST(ExecutorTest, WrongFeedShapeNamesTheInput) {
  Graph g;
  g.name = "relu";
  add_input(g, "pixels", {2, 3});
  add_node(g, "Relu", {"pixels"}, {{"y", {2, 3}}});
  g.outputs = {"y"};
  auto exec = Executor::create(g, KernelRegistry::global());
  ASSERT_TRUE(exec.ok()) << exec.status().to_string();
  TensorMap outputs;
  Status st = (*exec)->run({{"pixels", Tensor::zeros(DType::kF32, {3, 2})}}, &outputs);
  ASSERT_FALSE(st.ok());
  for (const char* part : {"pixels", "2x3", "3x2"}) EXPECT_NE(st.message().find(part), std::string::npos) << st.message();
  st = (*exec)->run({}, &outputs);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("pixels"), std::string::npos) << st.message();
}

TEST(ExecutorTest, RejectsNonStaticValuesAndUnknownOps) {
  Graph g;
  g.name = "dyn";
  g.inputs = {"x"};
  ValueInfo x = ValueInfo::of("x", DType::kF32, {2});
  x.dims[0] = Dim::sym("batch");
  g.set_value(x);
  add_node(g, "Relu", {"x"}, {{"y", {2}}});
  g.outputs = {"y"};
  auto exec = Executor::create(g, KernelRegistry::global());
  ASSERT_FALSE(exec.ok());
  EXPECT_NE(exec.status().message().find("'x'"), std::string::npos) << exec.status().message();

  Graph h;
  h.name = "unknown";
  add_input(h, "x", {2});
  add_node(h, "Softplus", {"x"}, {{"y", {2}}});
  h.outputs = {"y"};
  auto exec2 = Executor::create(h, KernelRegistry::global());
  ASSERT_FALSE(exec2.ok());
  EXPECT_NE(exec2.status().message().find("Softplus"), std::string::npos) << exec2.status().message();
}

TEST(ExecutorTest, SgdMutatesTheCallersTensors) {
  Graph g;
  g.name = "step";
  for (const char* name : {"p", "g", "v"}) add_input(g, name, {3});
  add_input(g, "lr", {});
  Node sgd;
  sgd.name = "sgd";
  sgd.op = "SGD";
  sgd.domain = kRavnestDomain;
  sgd.inputs = {"p", "g", "v", "lr"};
  sgd.attrs["momentum"] = 0.5f;
  g.nodes.push_back(sgd);
  auto exec = Executor::create(g, KernelRegistry::global());
  ASSERT_TRUE(exec.ok()) << exec.status().to_string();
  Tensor p = f32_tensor({3}, {1, 2, 3}), grad = f32_tensor({3}, {1, 1, 1}), v = Tensor::zeros(DType::kF32, {3});
  TensorMap outputs;
  ASSERT_TRUE((*exec)->run({{"p", p}, {"g", grad}, {"v", v}, {"lr", f32_tensor({}, {0.1})}}, &outputs).ok());
  EXPECT_NEAR(p.data<float>()[0], 0.9, 1e-6);
  EXPECT_NEAR(v.data<float>()[2], 1.0, 1e-6);
}

TEST(MemoryPlanTest, RandomLifetimesNeverOverlapInMemory) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    std::uniform_int_distribution<int> start(0, 40), length(0, 10), size(1, 5000);
    std::vector<BufferLife> buffers(60);
    size_t largest = 0, total_aligned = 0;
    for (BufferLife& b : buffers) {
      b.first = start(rng);
      b.last = b.first + length(rng);
      b.bytes = static_cast<size_t>(size(rng));
      largest = std::max(largest, b.bytes);
      total_aligned += (b.bytes + 63) / 64 * 64;
    }
    const MemoryPlan plan = plan_memory(buffers);
    ASSERT_EQ(plan.offsets.size(), buffers.size());
    EXPECT_GE(plan.arena_bytes, largest);
    EXPECT_LE(plan.arena_bytes, total_aligned);
    for (size_t i = 0; i < buffers.size(); ++i) {
      EXPECT_EQ(plan.offsets[i] % 64, 0u);
      EXPECT_LE(plan.offsets[i] + buffers[i].bytes, plan.arena_bytes);
      for (size_t j = i + 1; j < buffers.size(); ++j) {
        if (!lives_overlap(buffers[i], buffers[j])) continue;
        const bool disjoint = plan.offsets[i] + buffers[i].bytes <= plan.offsets[j] ||
                              plan.offsets[j] + buffers[j].bytes <= plan.offsets[i];
        EXPECT_TRUE(disjoint) << "trial " << trial << ": buffers " << i << " and " << j << " are live together";
      }
    }
  }
}

TEST(MemoryPlanTest, DisjointLifetimesShareOneSlot) {
  const MemoryPlan plan = plan_memory({{100, 0, 1}, {100, 2, 3}, {100, 4, 5}});
  EXPECT_EQ(plan.arena_bytes, 128u);
  EXPECT_EQ(plan.unplanned_bytes, 300u);
}

}  // namespace
}  // namespace ravnest::rt
