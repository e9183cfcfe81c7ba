// The optimizer kernels (AdamW, LAMB) against hand-computed steps and against
// torch.optim.AdamW; the learning-rate schedules; the optimizer settings' checks.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "runtime/bundle.h"
#include "runtime/kernel.h"

namespace ravnest::rt {
namespace {

using Vec = std::vector<double>;

Tensor f32(const Shape& shape, const Vec& values) {
  Tensor t = Tensor::empty(DType::kF32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(values[static_cast<size_t>(i)]);
  return t;
}

struct AdamSettings {
  double lr = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// One parameter with its Adam-family state and the kernel of `op` built for it.
struct Slot {
  Tensor param, exp_avg, exp_avg_sq, step, lr;
  std::unique_ptr<Kernel> kernel;
  Status run(const Tensor& grad) {
    Tensor g = grad;
    return kernel->run({&param, &g, &exp_avg, &exp_avg_sq, &step, &lr}, {});
  }
};

Result<Slot> make_slot(const std::string& op, const Shape& shape, const Vec& init, const AdamSettings& a,
                       DType step_dtype = DType::kI64) {
  Node node;
  node.name = op + "/w";
  node.op = op;
  node.domain = kRavnestDomain;
  node.inputs = {"w", "grad/w", "exp_avg/w", "exp_avg_sq/w", "step/w", "lr"};
  node.attrs["beta1"] = static_cast<float>(a.beta1);
  node.attrs["beta2"] = static_cast<float>(a.beta2);
  node.attrs["epsilon"] = static_cast<float>(a.eps);
  node.attrs["weight_decay"] = static_cast<float>(a.weight_decay);
  KernelRequest request;
  request.node = &node;
  for (int i = 0; i < 4; ++i) request.inputs.push_back(ValueInfo::of(node.inputs[i], DType::kF32, shape));
  request.inputs.push_back(ValueInfo::of("step/w", step_dtype, {}));
  request.inputs.push_back(ValueInfo::of("lr", DType::kF32, {}));
  RN_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel, KernelRegistry::global().build(request));
  Slot s{f32(shape, init), Tensor::zeros(DType::kF32, shape), Tensor::zeros(DType::kF32, shape),
         Tensor::zeros(DType::kI64, {}), f32({}, {a.lr}), std::move(kernel)};
  return s;
}

// The update of docs/training-ops.md, written out in double for one tensor.
struct AdamRef {
  Vec w, m, v;
  int t = 0;
  void step(const Vec& g, const AdamSettings& a, bool lamb) {
    ++t;
    const double bc1 = 1 - std::pow(a.beta1, t), bc2 = 1 - std::pow(a.beta2, t);
    for (size_t i = 0; i < w.size(); ++i) {
      m[i] = a.beta1 * m[i] + (1 - a.beta1) * g[i];
      v[i] = a.beta2 * v[i] + (1 - a.beta2) * g[i] * g[i];
    }
    if (!lamb) {
      for (size_t i = 0; i < w.size(); ++i) {
        w[i] *= 1 - a.lr * a.weight_decay;
        w[i] -= a.lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + a.eps);
      }
      return;
    }
    Vec r(w.size());
    double w2 = 0, r2 = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      r[i] = m[i] / bc1 / (std::sqrt(v[i] / bc2) + a.eps) + a.weight_decay * w[i];
      w2 += w[i] * w[i];
      r2 += r[i] * r[i];
    }
    const double trust = w2 > 0 && r2 > 0 ? std::sqrt(w2 / r2) : 1.0;
    for (size_t i = 0; i < w.size(); ++i) w[i] -= a.lr * trust * r[i];
  }
};

// Three steps of `op` on two tensors of different shapes against the double reference.
void check_against_reference(const std::string& op, const AdamSettings& a) {
  const bool lamb = op == "LAMB";
  const std::vector<Shape> shapes = {{3}, {2, 2}};
  const std::vector<Vec> init = {{0.5, -1.0, 2.0}, {1.5, -0.25, 0.0, 3.0}};
  const std::vector<std::vector<Vec>> grads = {{{0.1, -0.2, 0.3}, {0.4, 0.0, -0.5}, {-0.3, 0.25, 0.05}},
                                               {{1.0, -2.0, 0.5, 0.0}, {-1.0, 0.5, 0.25, 1.0}, {0.0, 0.75, -0.5, 2.0}}};
  for (size_t k = 0; k < shapes.size(); ++k) {
    SCOPED_TRACE(op + " tensor " + std::to_string(k));
    auto slot = make_slot(op, shapes[k], init[k], a);
    ASSERT_TRUE(slot.ok()) << slot.status().to_string();
    const size_t n = init[k].size();
    AdamRef ref{init[k], Vec(n, 0.0), Vec(n, 0.0)};
    for (int step = 0; step < 3; ++step) {
      ASSERT_TRUE(slot->run(f32(shapes[k], grads[k][step])).ok());
      ref.step(grads[k][step], a, lamb);
      EXPECT_EQ(slot->step.data<int64_t>()[0], step + 1);
      for (size_t i = 0; i < n; ++i) {
        EXPECT_NEAR(slot->param.data<float>()[i], ref.w[i], 2e-6) << "step " << step << " element " << i;
        EXPECT_NEAR(slot->exp_avg.data<float>()[i], ref.m[i], 1e-7) << "step " << step << " element " << i;
        EXPECT_NEAR(slot->exp_avg_sq.data<float>()[i], ref.v[i], 1e-7) << "step " << step << " element " << i;
      }
    }
  }
}

TEST(OptimizerKernels, AdamWMatchesTheFormulaOverThreeSteps) {
  check_against_reference("AdamW", {0.1, 0.8, 0.95, 1e-6, 0.05});
  check_against_reference("AdamW", {0.01, 0.9, 0.999, 1e-8, 0.0});
}

TEST(OptimizerKernels, LambMatchesTheFormulaOverThreeSteps) {
  check_against_reference("LAMB", {0.1, 0.8, 0.95, 1e-6, 0.05});
  check_against_reference("LAMB", {0.01, 0.9, 0.999, 1e-8, 0.0});
}

// Step 1 of AdamW and LAMB by hand. After one step m_hat = g and v_hat = g^2, so
// the Adam direction is g / (|g| + eps) ~ sign(g).
//   AdamW, lr 0.1, wd 0.5: w = 3 * (1 - 0.05) - 0.1 * 1 = 2.75; 4 * 0.95 + 0.1 = 3.9.
//   LAMB, lr 0.1, wd 0: r = [1, -1], ||w|| = 5, ||r|| = sqrt(2), trust 5 / sqrt(2):
//   w = 3 - 0.1 * 5 / sqrt(2) = 2.6464466, 4 + 0.1 * 5 / sqrt(2) = 4.3535534.
TEST(OptimizerKernels, FirstStepByHand) {
  auto adamw = make_slot("AdamW", {2}, {3.0, 4.0}, {0.1, 0.9, 0.999, 1e-8, 0.5});
  ASSERT_TRUE(adamw.ok()) << adamw.status().to_string();
  ASSERT_TRUE(adamw->run(f32({2}, {1.0, -1.0})).ok());
  EXPECT_NEAR(adamw->param.data<float>()[0], 2.75, 1e-6);
  EXPECT_NEAR(adamw->param.data<float>()[1], 3.9, 1e-6);
  auto lamb = make_slot("LAMB", {2}, {3.0, 4.0}, {0.1, 0.9, 0.999, 1e-8, 0.0});
  ASSERT_TRUE(lamb.ok()) << lamb.status().to_string();
  ASSERT_TRUE(lamb->run(f32({2}, {1.0, -1.0})).ok());
  EXPECT_NEAR(lamb->param.data<float>()[0], 2.6464466, 1e-6);
  EXPECT_NEAR(lamb->param.data<float>()[1], 4.3535534, 1e-6);
}

// A zero weight tensor (a fresh bias) has no trust ratio: LAMB takes the plain Adam step.
TEST(OptimizerKernels, LambTrustIsOneForZeroWeights) {
  auto lamb = make_slot("LAMB", {2}, {0.0, 0.0}, {0.1, 0.9, 0.999, 1e-8, 0.0});
  ASSERT_TRUE(lamb.ok()) << lamb.status().to_string();
  ASSERT_TRUE(lamb->run(f32({2}, {2.0, -0.5})).ok());
  EXPECT_NEAR(lamb->param.data<float>()[0], -0.1, 1e-6);
  EXPECT_NEAR(lamb->param.data<float>()[1], 0.1, 1e-6);
}

// torch.optim.AdamW (PyTorch 1.13, foreach=False), computed offline by:
//   import torch
//   p1 = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
//   p2 = torch.tensor([[1.5, -0.25], [0.0, 3.0]], requires_grad=True)
//   grads1 = [[0.1, -0.2, 0.3], [0.4, 0.0, -0.5], [-0.3, 0.25, 0.05]]
//   grads2 = [[[1.0, -2.0], [0.5, 0.0]], [[-1.0, 0.5], [0.25, 1.0]], [[0.0, 0.75], [-0.5, 2.0]]]
//   opt = torch.optim.AdamW([p1, p2], lr=0.1, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, foreach=False)
//   for s in range(3):
//       p1.grad = torch.tensor(grads1[s]); p2.grad = torch.tensor(grads2[s]); opt.step()
//       print(p1.detach().flatten().tolist(), p2.detach().flatten().tolist())
TEST(OptimizerKernels, AdamWMatchesPyTorch) {
  const AdamSettings a{0.1, 0.8, 0.95, 1e-6, 0.05};
  const std::vector<Shape> shapes = {{3}, {2, 2}};
  const std::vector<Vec> init = {{0.5, -1.0, 2.0}, {1.5, -0.25, 0.0, 3.0}};
  const std::vector<std::vector<Vec>> grads = {{{0.1, -0.2, 0.3}, {0.4, 0.0, -0.5}, {-0.3, 0.25, 0.05}},
                                               {{1.0, -2.0, 0.5, 0.0}, {-1.0, 0.5, 0.25, 1.0}, {0.0, 0.75, -0.5, 2.0}}};
  const std::vector<std::vector<Vec>> torch_params = {
      {{0.397500992, -0.895000517, 1.89000034},
       {0.305065334, -0.826850355, 1.9153738},
       {0.291935086, -0.849609315, 1.92509317}},
      {{1.39250016, -0.148750037, -0.0999998003, 2.98500013},
       {1.39664876, -0.105602004, -0.191565216, 2.89249611},
       {1.39780247, -0.100789033, -0.192500055, 2.79092169}}};
  for (size_t k = 0; k < shapes.size(); ++k) {
    auto slot = make_slot("AdamW", shapes[k], init[k], a);
    ASSERT_TRUE(slot.ok()) << slot.status().to_string();
    for (int step = 0; step < 3; ++step) {
      ASSERT_TRUE(slot->run(f32(shapes[k], grads[k][step])).ok());
      for (size_t i = 0; i < init[k].size(); ++i)
        EXPECT_NEAR(slot->param.data<float>()[i], torch_params[k][step][i], 1e-6)
            << "tensor " << k << " step " << step << " element " << i;
    }
  }
  // And the state PyTorch printed for p1 after step 3 (exp_avg, exp_avg_sq).
  auto slot = make_slot("AdamW", {3}, init[0], a);
  ASSERT_TRUE(slot.ok());
  for (int step = 0; step < 3; ++step) ASSERT_TRUE(slot->run(f32({3}, grads[0][step])).ok());
  const Vec m = {0.0168000013, 0.0243999995, -0.0315999985}, v = {0.0125512518, 0.0049299998, 0.0160612501};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(slot->exp_avg.data<float>()[i], m[i], 1e-8);
    EXPECT_NEAR(slot->exp_avg_sq.data<float>()[i], v[i], 1e-8);
  }
}

TEST(OptimizerKernels, AdamRejectsAFloatStepCount) {
  auto slot = make_slot("AdamW", {2}, {1.0, 2.0}, {}, DType::kF32);
  ASSERT_FALSE(slot.ok());
  EXPECT_NE(slot.status().message().find("int64"), std::string::npos) << slot.status().message();
}

TEST(LearningRateSchedule, WarmUpThenCosineToTheFloor) {
  OptimizerConfig o;
  o.lr = 0.1;
  o.lr_min = 0.01;
  o.lr_schedule = "cosine";
  o.warmup_steps = 4;
  const int64_t total = 14;  // 4 warm-up updates, then 10 of cosine decay
  EXPECT_NEAR(scheduled_lr(o, 0, total), 0.025, 1e-12);
  EXPECT_NEAR(scheduled_lr(o, 3, total), 0.1, 1e-12);
  EXPECT_NEAR(scheduled_lr(o, 4, total), 0.1, 1e-12);  // cosine starts at the peak
  // Update 8 is 4/9 of the way from the peak (update 4) to the floor (update 13).
  const double mid = 0.01 + 0.09 * 0.5 * (1 + std::cos(std::numbers::pi * 4.0 / 9.0));
  EXPECT_NEAR(scheduled_lr(o, 8, total), mid, 1e-12);
  EXPECT_NEAR(scheduled_lr(o, 13, total), 0.01, 1e-12);  // the last update is at the floor
  for (int64_t t = 4; t + 1 < total; ++t) EXPECT_GT(scheduled_lr(o, t, total), scheduled_lr(o, t + 1, total));
}

TEST(LearningRateSchedule, StepDecayAndConstant) {
  OptimizerConfig o;
  o.lr = 1.0;
  o.lr_schedule = "step";
  o.step_size = 3;
  o.gamma = 0.5;
  o.lr_min = 0.2;
  const double want[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2};
  for (int t = 0; t < 11; ++t) EXPECT_NEAR(scheduled_lr(o, t, 100), want[t], 1e-12) << "update " << t;
  o.lr_schedule = "constant";
  o.warmup_steps = 2;
  EXPECT_NEAR(scheduled_lr(o, 0, 100), 0.5, 1e-12);
  EXPECT_NEAR(scheduled_lr(o, 1, 100), 1.0, 1e-12);
  EXPECT_NEAR(scheduled_lr(o, 50, 100), 1.0, 1e-12);
}

TEST(OptimizerConfigTest, RejectsWhatTheRuntimeCannotRun) {
  TrainingConfig t;
  EXPECT_TRUE(validate_optimizer(t).ok());
  t.optimizer.type = "adam";
  EXPECT_NE(validate_optimizer(t).message().find("--optimizer 'adam'"), std::string::npos);
  t.optimizer.type = "lamb";
  t.optimizer.lr_schedule = "step";
  EXPECT_NE(validate_optimizer(t).message().find("--step-size"), std::string::npos);
  t.optimizer.step_size = 10;
  EXPECT_TRUE(validate_optimizer(t).ok());
  t.optimizer.beta2 = 1.0;
  EXPECT_NE(validate_optimizer(t).message().find("--beta2"), std::string::npos);
  t.optimizer.beta2 = 0.99;
  t.optimizer.clip_norm = 1.0;
  t.mode = "async";
  EXPECT_NE(validate_optimizer(t).message().find("--clip-norm with --async"), std::string::npos);
}

TEST(OptimizerConfigTest, ManifestKeepsEveryField) {
  Manifest m;
  m.run_id = "r";
  m.self = {"node0", "127.0.0.1", 29500};
  m.data_input = "images";  // one stage: it reads the data and the labels
  m.labels_input = "labels";
  m.loss_output = "loss";
  m.logits_output = "logits";
  m.programs = {{"forward", "f.onnx"}, {"backward", "b.onnx"}, {"weight", "w.onnx"}, {"optimizer", "o.onnx"}};
  OptimizerConfig& o = m.training.optimizer;
  o.type = "lamb";
  o.beta1 = 0.85;
  o.beta2 = 0.98;
  o.eps = 1e-7;
  o.lr_schedule = "cosine";
  o.warmup_steps = 7;
  o.lr_min = 1e-4;
  o.step_size = 3;
  o.gamma = 0.3;
  o.clip_norm = 2.5;
  auto back = manifest_from_json(manifest_to_json(m));
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  const OptimizerConfig& b = back->training.optimizer;
  EXPECT_EQ(b.type, "lamb");
  EXPECT_EQ(b.lr_schedule, "cosine");
  EXPECT_EQ(b.warmup_steps, 7);
  EXPECT_EQ(b.step_size, 3);
  EXPECT_DOUBLE_EQ(b.beta1, 0.85);
  EXPECT_DOUBLE_EQ(b.beta2, 0.98);
  EXPECT_DOUBLE_EQ(b.eps, 1e-7);
  EXPECT_DOUBLE_EQ(b.lr_min, 1e-4);
  EXPECT_DOUBLE_EQ(b.gamma, 0.3);
  EXPECT_DOUBLE_EQ(b.clip_norm, 2.5);
}

}  // namespace
}  // namespace ravnest::rt
