// Stage programs built by the compiler, executed by the runtime in-process:
// gradients of a MatMul+Add network (batched MatMul with a broadcast weight,
// bias broadcasting, Reshape) against central finite differences of the loss,
// for 1 and 2 stages; and the B/W split's contract.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <random>

#include "codegen/stages.h"
#include "frontend/grad_util.h"
#include "frontend/passes.h"
#include "runtime/executor.h"

namespace ravnest::cg {
namespace {

using rt::Tensor;
using rt::TensorMap;

TensorData random_floats(const Shape& shape, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 0.5f);
  std::vector<float> v(static_cast<size_t>(numel(shape)));
  for (float& x : v) x = dist(rng);
  return TensorData::from_floats(v, shape);
}

using fe::make_node;

// X[2,3,6] -MatMul W1[6,5]-> +b1[5] -> Relu -> Reshape[2,15] -MatMul W2[15,4]-> +b2[4] -> logits[2,4]
Graph mlp() {
  std::mt19937 rng(3);
  Graph g;
  g.name = "mlp";
  g.opset = 17;
  g.inputs = {"x"};
  g.outputs = {"logits"};
  g.set_value(ValueInfo::of("x", DType::kF32, {2, 3, 6}));
  for (auto [name, shape] : std::vector<std::pair<std::string, Shape>>{{"w1", {6, 5}}, {"b1", {5}}, {"w2", {15, 4}}, {"b2", {4}}}) {
    g.initializers[name] = random_floats(shape, rng);
    g.parameters.insert(name);
    g.set_value(ValueInfo::of(name, DType::kF32, shape));
  }
  g.initializers["shape"] = TensorData::from_ints({2, 15}, {2});
  g.set_value(ValueInfo::of("shape", DType::kI64, {2}));
  g.nodes = {make_node("mm1", "MatMul", {"x", "w1"}, {"h1"}), make_node("add1", "Add", {"h1", "b1"}, {"h2"}),
             make_node("relu", "Relu", {"h2"}, {"h3"}),       make_node("flat", "Reshape", {"h3", "shape"}, {"h4"}),
             make_node("mm2", "MatMul", {"h4", "w2"}, {"h5"}), make_node("add2", "Add", {"h5", "b2"}, {"logits"})};
  EXPECT_TRUE(fe::infer_shapes(g).ok());
  return g;
}

struct Runner {
  std::vector<StageProgram> stages;
  std::vector<std::unique_ptr<rt::Executor>> f, b, w;
  explicit Runner(std::vector<StageProgram> s) : stages(std::move(s)) {
    for (auto& sp : stages) {
      f.push_back(std::move(rt::Executor::create(sp.forward, rt::KernelRegistry::global()).value()));
      b.push_back(std::move(rt::Executor::create(sp.backward, rt::KernelRegistry::global()).value()));
      w.push_back(std::move(rt::Executor::create(sp.weight, rt::KernelRegistry::global()).value()));
    }
  }
  static TensorMap select(const Graph& g, const TensorMap& all) {
    TensorMap out;
    for (const auto& name : g.inputs) out[name] = all.at(name);
    return out;
  }
  // Sum-reduced loss; when `grads` is given, also every parameter gradient (seed 1).
  double run(const TensorMap& params, const Tensor& x, const Tensor& labels, TensorMap* grads) {
    std::vector<TensorMap> keep(stages.size());
    TensorMap wire;
    double loss = 0;
    for (size_t s = 0; s < stages.size(); ++s) {
      TensorMap all = params;
      for (auto& [k, v] : wire) all[k] = v;
      all["x"] = x;
      all["labels"] = labels;
      TensorMap out;
      EXPECT_TRUE(f[s]->run(select(stages[s].forward, all), &out).ok());
      for (auto& [k, v] : out) all[k] = v;
      for (const auto& t : stages[s].send) wire[t.name] = out.at(t.name);
      if (!stages[s].loss_output.empty()) loss = *out.at("loss").data<float>();
      keep[s] = all;
    }
    if (!grads) return loss;
    TensorMap grad_wire;
    for (size_t s = stages.size(); s-- > 0;) {
      TensorMap all = keep[s];
      Tensor seed = Tensor::empty(DType::kF32, {});
      *seed.data<float>() = 1.0f;
      all["seed/loss"] = seed;
      for (const auto& t : stages[s].send) all["seed/" + t.name] = grad_wire.at(t.name);
      TensorMap bout, wout;
      Status st = b[s]->run(select(stages[s].backward, all), &bout);
      EXPECT_TRUE(st.ok()) << st.to_string();
      for (auto& [k, v] : bout) all[k] = v;
      for (const auto& t : stages[s].recv) grad_wire[t.name] = bout.at("grad/" + t.name);
      st = w[s]->run(select(stages[s].weight, all), &wout);
      EXPECT_TRUE(st.ok()) << st.to_string();
      for (auto& [k, v] : wout) (*grads)[k.substr(5)] = v;
    }
    return loss;
  }
};

class MlpGradients : public ::testing::TestWithParam<int> {};

TEST_P(MlpGradients, MatchFiniteDifferences) {
  const int stages = GetParam();
  Graph g = mlp();
  auto built = build_stage_programs(g, stages == 1 ? std::vector<int>(6, 0) : std::vector<int>{0, 0, 0, 1, 1, 1},
                                    stages, StageOptions{});
  ASSERT_TRUE(built.ok()) << built.status().to_string();
  Runner runner(std::move(built).value());

  std::mt19937 rng(11);
  TensorMap params;
  for (const auto& name : {"w1", "b1", "w2", "b2"}) {
    const TensorData& d = g.initializers.at(name);
    params[name] = Tensor::empty(DType::kF32, d.shape);
    std::memcpy(params[name].raw(), d.bytes.data(), d.bytes.size());
  }
  TensorData xd = random_floats({2, 3, 6}, rng);
  Tensor x = Tensor::empty(DType::kF32, {2, 3, 6});
  std::memcpy(x.raw(), xd.bytes.data(), xd.bytes.size());
  Tensor labels = Tensor::empty(DType::kI64, {2});
  labels.data<int64_t>()[0] = 1;
  labels.data<int64_t>()[1] = 3;

  TensorMap grads;
  runner.run(params, x, labels, &grads);
  ASSERT_EQ(grads.size(), 4u);
  // Central differences in float32 with eps 1e-2: truncation ~eps^2 and
  // rounding ~1e-7/eps stay well under 2e-3 of the largest gradient.
  const float eps = 1e-2f;
  for (auto& [name, p] : params) {
    const Tensor& got = grads.at(name);
    ASSERT_EQ(got.shape(), p.shape()) << name;
    double max_err = 0, max_ref = 0;
    for (int64_t i = 0; i < p.numel(); ++i) {
      float saved = p.data<float>()[i];
      p.data<float>()[i] = saved + eps;
      double up = runner.run(params, x, labels, nullptr);
      p.data<float>()[i] = saved - eps;
      double down = runner.run(params, x, labels, nullptr);
      p.data<float>()[i] = saved;
      double fd = (up - down) / (2 * eps);
      max_err = std::max(max_err, std::abs(fd - got.data<float>()[i]));
      max_ref = std::max(max_ref, std::abs(fd));
    }
    EXPECT_GT(max_ref, 1e-3) << name;
    EXPECT_LE(max_err, 2e-3 * max_ref) << name << " with " << stages << " stage(s)";
  }
}

INSTANTIATE_TEST_SUITE_P(Stages, MlpGradients, ::testing::Values(1, 2));

TEST(StagePrograms, BackwardSplitsIntoBAndW) {
  Graph g = mlp();
  auto built = build_stage_programs(g, {0, 0, 0, 1, 1, 1}, 2, StageOptions{});
  ASSERT_TRUE(built.ok()) << built.status().to_string();
  const auto& st = *built;
  // Stage 1 receives h3 (Relu output) and sends its gradient back; stage 0 needs no input gradient.
  ASSERT_EQ(st[1].recv.size(), 1u);
  EXPECT_EQ(st[1].recv[0].name, "h3");
  EXPECT_EQ(st[1].recv[0].wire_id, st[0].send[0].wire_id);
  EXPECT_EQ(st[1].backward.outputs.front(), "grad/h3");
  EXPECT_TRUE(st[0].backward.outputs.empty() ||
              std::find(st[0].backward.outputs.begin(), st[0].backward.outputs.end(), "grad/x") == st[0].backward.outputs.end());
  for (const auto& sp : st) {
    // W produces exactly the parameter gradients, and no B node reads a W output.
    std::set<std::string> w_made;
    for (const Node& n : sp.weight.nodes)
      for (const auto& o : n.outputs) w_made.insert(o);
    for (const auto& p : sp.params) EXPECT_TRUE(w_made.count("grad/" + p)) << p;
    for (const Node& n : sp.backward.nodes)
      for (const auto& in : n.inputs) EXPECT_FALSE(w_made.count(in)) << n.name << " reads W output " << in;
    for (const auto& p : sp.params)
      for (const Node& n : sp.backward.nodes)
        for (const auto& o : n.outputs) EXPECT_NE(o, "grad/" + p) << "B computes a parameter gradient";
  }
  // The loss lives on the last stage only.
  EXPECT_TRUE(st[0].loss_output.empty());
  EXPECT_EQ(st[1].loss_output, "loss");
}

TEST(StagePrograms, UnsupportedGradientNamesNodeAndOp) {
  Graph g = mlp();
  g.nodes[2].op = "Equal";  // has a shape rule but no gradient rule
  auto built = build_stage_programs(g, std::vector<int>(6, 0), 1, StageOptions{});
  ASSERT_FALSE(built.ok());
  EXPECT_NE(built.status().message().find("node 'relu' has op 'Equal'"), std::string::npos)
      << built.status().message();
  EXPECT_NE(built.status().message().find("no gradient rule"), std::string::npos);
}

}  // namespace
}  // namespace ravnest::cg
