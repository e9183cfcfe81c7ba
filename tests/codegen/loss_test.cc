// The loss the compiler appends (StageOptions::loss, `ravnestc compile --loss`):
// "mse" appends ai.ravnest.MseLoss whose value and whose parameter gradients,
// run through the stage programs, match the definition worked out by hand; a
// language model's [B, T, V] logits get the flattened form with ignore_index -1;
// a model that carries its own loss refuses "mse" with a message that says what
// to do, and an unknown loss kind is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "codegen/stages.h"
#include "frontend/grad_util.h"
#include "frontend/passes.h"
#include "runtime/executor.h"

namespace ravnest::cg {
namespace {

using rt::Tensor;
using rt::TensorMap;

using fe::make_node;

constexpr int64_t kN = 3, kD = 2, kC = 4;

// x[3,2] -MatMul w[2,4]-> logits[3,4], w = 0.1 * (i + 1) row-major.
Graph linear() {
  Graph g;
  g.name = "linear";
  g.opset = 17;
  g.inputs = {"x"};
  g.outputs = {"logits"};
  g.set_value(ValueInfo::of("x", DType::kF32, {kN, kD}));
  std::vector<float> w(kD * kC);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.1f * static_cast<float>(i + 1);
  g.initializers["w"] = TensorData::from_floats(w, {kD, kC});
  g.parameters.insert("w");
  g.set_value(ValueInfo::of("w", DType::kF32, {kD, kC}));
  g.nodes = {make_node("mm", "MatMul", {"x", "w"}, {"logits"})};
  EXPECT_TRUE(fe::infer_shapes(g).ok());
  return g;
}

// The same network ending in its own mean cross-entropy: (x, labels) -> (loss, logits).
Graph linear_with_loss() {
  Graph g = linear();
  g.inputs = {"x", "labels"};
  g.outputs = {"loss", "logits"};
  g.set_value(ValueInfo::of("labels", DType::kI64, {kN}));
  Node ce = make_node("ce", "SoftmaxCrossEntropyLoss", {"logits", "labels"}, {"loss"});
  ce.attrs["reduction"] = std::string("mean");
  g.nodes.push_back(ce);
  EXPECT_TRUE(fe::infer_shapes(g).ok());
  return g;
}

StageOptions with_loss(const std::string& loss) {
  StageOptions o;
  o.loss = loss;
  return o;
}

const Node* find_op(const Graph& g, const std::string& op) {
  auto it = std::find_if(g.nodes.begin(), g.nodes.end(), [&](const Node& n) { return n.op == op; });
  return it == g.nodes.end() ? nullptr : &*it;
}

TensorMap select(const Graph& g, const TensorMap& all) {
  TensorMap out;
  for (const auto& name : g.inputs) out[name] = all.at(name);
  return out;
}

TEST(AppendedLoss, MseValueAndGradientMatchTheDefinition) {
  Graph g = linear();
  auto built = build_stage_programs(g, {0}, 1, with_loss("mse"));
  ASSERT_TRUE(built.ok()) << built.status().to_string();
  const StageProgram& sp = built->at(0);
  const Node* loss = find_op(sp.forward, "MseLoss");
  ASSERT_NE(loss, nullptr) << "no MseLoss in the forward";
  EXPECT_EQ(loss->domain, kRavnestDomain);
  EXPECT_EQ(loss->attr_string("reduction", ""), "sum");
  EXPECT_FALSE(loss->has_attr("ignore_index"));
  EXPECT_EQ(find_op(sp.forward, "SoftmaxCrossEntropyLoss"), nullptr);
  ASSERT_NE(find_op(sp.backward, "MseLossGrad"), nullptr) << "no MseLossGrad in the backward";
  EXPECT_EQ(sp.loss_reduction, "sum");

  // Run F, B and W once with seed 1 on the loss.
  const float xs[kN * kD] = {1.0f, -2.0f, 0.5f, 3.0f, -1.5f, 0.25f};
  const int64_t ls[kN] = {2, 0, 3};
  TensorMap all;
  all["x"] = Tensor::empty(DType::kF32, {kN, kD});
  std::memcpy(all["x"].raw(), xs, sizeof xs);
  all["labels"] = Tensor::empty(DType::kI64, {kN});
  std::memcpy(all["labels"].raw(), ls, sizeof ls);
  all["w"] = Tensor::empty(DType::kF32, {kD, kC});
  std::memcpy(all["w"].raw(), g.initializers.at("w").bytes.data(), g.initializers.at("w").bytes.size());
  const float* w = all["w"].data<float>();
  TensorMap out;
  for (const Graph* program : {&sp.forward, &sp.backward, &sp.weight}) {
    if (program == &sp.backward) {
      all["seed/loss"] = Tensor::empty(DType::kF32, {});
      *all["seed/loss"].data<float>() = 1.0f;
    }
    auto exec = rt::Executor::create(*program, rt::KernelRegistry::global());
    ASSERT_TRUE(exec.ok()) << program->name << ": " << exec.status().to_string();
    out.clear();
    Status s = (*exec)->run(select(*program, all), &out);
    ASSERT_TRUE(s.ok()) << program->name << ": " << s.to_string();
    for (auto& [k, v] : out) all[k] = v;
  }

  // By hand: loss = sum_n mean_c (s - t)^2; dL/dw[d,c] = sum_n x[n,d] * 2 (s - t)[n,c] / C.
  double want_loss = 0;
  double want_grad[kD * kC] = {};
  for (int64_t n = 0; n < kN; ++n)
    for (int64_t c = 0; c < kC; ++c) {
      double s = 0;
      for (int64_t d = 0; d < kD; ++d) s += xs[n * kD + d] * w[d * kC + c];
      const double diff = s - (c == ls[n] ? 1.0 : 0.0);
      want_loss += diff * diff / kC;
      for (int64_t d = 0; d < kD; ++d) want_grad[d * kC + c] += xs[n * kD + d] * 2 * diff / kC;
    }
  EXPECT_NEAR(*all.at("loss").data<float>(), want_loss, 1e-5 * want_loss);
  ASSERT_TRUE(all.count("grad/w"));
  for (int64_t i = 0; i < kD * kC; ++i)
    EXPECT_NEAR(all.at("grad/w").data<float>()[i], want_grad[i], 1e-5) << "grad/w[" << i << "]";
}

TEST(AppendedLoss, LanguageModelLogitsAreFlattenedWithIgnoreIndex) {
  // tokens x[2,3,4] -MatMul w[4,5]-> logits [2,3,5]: a [B, T, V] model.
  Graph g;
  g.name = "seq";
  g.opset = 17;
  g.inputs = {"x"};
  g.outputs = {"logits"};
  g.set_value(ValueInfo::of("x", DType::kF32, {2, 3, 4}));
  g.initializers["w"] = TensorData::from_floats(std::vector<float>(20, 0.5f), {4, 5});
  g.parameters.insert("w");
  g.set_value(ValueInfo::of("w", DType::kF32, {4, 5}));
  g.nodes = {make_node("mm", "MatMul", {"x", "w"}, {"logits"})};
  ASSERT_TRUE(fe::infer_shapes(g).ok());
  auto built = build_stage_programs(g, {0}, 1, with_loss("mse"));
  ASSERT_TRUE(built.ok()) << built.status().to_string();
  const Graph& fwd = built->at(0).forward;
  const Node* loss = find_op(fwd, "MseLoss");
  ASSERT_NE(loss, nullptr);
  EXPECT_EQ(loss->attr_int("ignore_index", 0), -1);
  const ValueInfo* scores = fwd.find_value(loss->inputs.at(0));
  ASSERT_NE(scores, nullptr);
  EXPECT_EQ(scores->static_shape(), (Shape{6, 5}));
}

TEST(AppendedLoss, MseOnAModelWithItsOwnLossIsRefused) {
  Graph g = linear_with_loss();
  ASSERT_TRUE(model_io(g, StageOptions{}).ok());  // "ce", the default, trains with the model's loss
  auto io = model_io(g, with_loss("mse"));
  ASSERT_FALSE(io.ok());
  const std::string& message = io.status().message();
  EXPECT_NE(message.find("--loss mse appends a loss to a model that ends in logits, but this model computes its own "
                         "loss (inputs 'x', 'labels'; outputs 'loss', 'logits')"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("drop --loss mse"), std::string::npos) << message;
  // The compiler's entry point gives the same refusal.
  auto built = build_stage_programs(g, {0, 0}, 1, with_loss("mse"));
  ASSERT_FALSE(built.ok());
  EXPECT_EQ(built.status().message(), message);
}

TEST(AppendedLoss, UnknownLossKindIsRefused) {
  auto io = model_io(linear(), with_loss("hinge"));
  ASSERT_FALSE(io.ok());
  EXPECT_NE(io.status().message().find("loss 'hinge' is not ce (softmax cross-entropy) or mse"), std::string::npos)
      << io.status().message();
}

}  // namespace
}  // namespace ravnest::cg
