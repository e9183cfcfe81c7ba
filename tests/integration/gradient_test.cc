// Whole-model gradients against PyTorch's float64 gradients, through the
// compiler's stage programs run in-process with the boundary tensors handed from
// stage to stage as the wire would: the Fashion-MNIST CNN (models/cnn/
// reference.rvt, by models/cnn/make_reference.py) on 1, 2 and 3 stages, and every
// target model's small variant (models/<name>/reference.rvt, by
// models/export_all.py) on 1 and 2 stages. A tied weight's gradient is the sum
// of its stages' parts (what the trainer's tied ring computes). The bar per
// tensor, max|g - g_ref| / max|g_ref|: <= 1e-4, or, where PyTorch's own float32
// gradient is further than 1e-5 from float64 (fp32_error/<param> in the
// fixture), no more than 10x that error. BatchNorm running statistics after the
// step match the fixture's (the ONNX definition: biased variance).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <map>
#include <sstream>

#include "codegen/compile.h"
#include "runtime/bundle.h"
#include "runtime/executor.h"
#include "runtime/tensor_file.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using rt::Tensor;
using rt::TensorMap;

struct Reference {
  Tensor input, labels;
  double loss = 0;
  std::map<std::string, Tensor> grads;
  std::map<std::string, double> fp32_error;  // PyTorch float32 vs float64, per parameter
  std::map<std::string, Tensor> running;     // BatchNorm statistics after the step
};

Reference load_reference(const std::string& rel_path) {
  Reference ref;
  auto tensors = rt::read_tensor_file(testing::source_path(rel_path));
  EXPECT_TRUE(tensors.ok()) << tensors.status().to_string();
  if (!tensors.ok()) return ref;
  auto scalar = [](const Tensor& t) { return t.dtype() == DType::kF64 ? *t.data<double>() : *t.data<float>(); };
  for (auto& [name, t] : *tensors) {
    if (name == "input") ref.input = t;
    else if (name == "labels") ref.labels = t;
    else if (name == "loss") ref.loss = scalar(t);
    else if (name.rfind("grad/", 0) == 0) ref.grads[name.substr(5)] = t;
    else if (name.rfind("fp32_error/", 0) == 0) ref.fp32_error[name.substr(11)] = scalar(t);
    else if (name.rfind("running/", 0) == 0) ref.running[name.substr(8)] = t;
  }
  return ref;
}

double ref_value(const Tensor& t, int64_t i) {
  return t.dtype() == DType::kF64 ? t.data<double>()[i] : static_cast<double>(t.data<float>()[i]);
}

// Only the inputs `program` declares (the executor refuses anything else).
TensorMap select(const Graph& program, const TensorMap& all) {
  TensorMap feeds;
  for (const auto& name : program.inputs)
    if (all.count(name)) feeds[name] = all.at(name);
  return feeds;
}

// Runs one training micro-batch (the whole batch) through K stages and returns
// every parameter gradient (summed over the stages holding it), the loss and the
// running state after the forward.
void run_stages(const std::vector<rt::Bundle>& bundles, const Reference& ref, std::map<std::string, Tensor>* grads,
                double* loss, std::map<std::string, Tensor>* state = nullptr) {
  const size_t K = bundles.size();
  std::vector<std::unique_ptr<rt::Executor>> fwd(K), bwd(K), wgt(K);
  for (size_t s = 0; s < K; ++s) {
    auto f = rt::Executor::create(bundles[s].forward, rt::KernelRegistry::global());
    auto b = rt::Executor::create(bundles[s].backward, rt::KernelRegistry::global());
    auto w = rt::Executor::create(bundles[s].weight, rt::KernelRegistry::global());
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    fwd[s] = std::move(f).value();
    bwd[s] = std::move(b).value();
    wgt[s] = std::move(w).value();
  }
  std::vector<TensorMap> stash(K);
  std::map<uint32_t, Tensor> wire;  // activations, by wire id
  for (size_t s = 0; s < K; ++s) {
    const rt::Manifest& m = bundles[s].manifest;
    TensorMap feeds;
    for (const auto& [name, t] : bundles[s].weights) feeds[name] = t.clone();
    if (m.first()) feeds[m.data_input] = ref.input;
    if (m.last()) feeds[m.labels_input] = ref.labels;
    for (const auto& t : m.recv) feeds[t.name] = wire.at(t.wire_id);
    TensorMap out;
    Status fst = fwd[s]->run(select(bundles[s].forward, feeds), &out);
    ASSERT_TRUE(fst.ok()) << fst.to_string();
    for (const auto& t : m.send) wire[t.wire_id] = out.at(t.name);
    stash[s] = feeds;
    for (auto& [k, v] : out) stash[s][k] = v;
    const double per_sample = m.loss_reduction == "mean" ? 1.0 : static_cast<double>(m.training.batch);
    if (m.last()) *loss = *out.at(m.loss_output).data<float>() / per_sample;
    if (state)
      for (const auto& name : m.state) (*state)[name] = feeds.at(name);  // updated in place by the forward
  }
  std::map<uint32_t, Tensor> grad_wire;
  for (size_t s = K; s-- > 0;) {
    const rt::Manifest& m = bundles[s].manifest;
    TensorMap feeds = stash[s];
    if (m.last()) {
      Tensor seed = Tensor::empty(DType::kF32, {});
      *seed.data<float>() = m.loss_reduction == "mean" ? 1.0f : 1.0f / static_cast<float>(m.training.batch);
      feeds["seed/" + m.loss_output] = seed;
    }
    for (const auto& t : m.send)
      if (grad_wire.count(t.wire_id)) feeds["seed/" + t.name] = grad_wire.at(t.wire_id);
    TensorMap bout;
    Status st = bwd[s]->run(select(bundles[s].backward, feeds), &bout);
    ASSERT_TRUE(st.ok()) << st.to_string();
    for (const auto& t : m.recv)
      if (bout.count("grad/" + t.name)) grad_wire[t.wire_id] = bout.at("grad/" + t.name);
    for (auto& [k, v] : bout) feeds[k] = v;
    TensorMap wout;
    st = wgt[s]->run(select(bundles[s].weight, feeds), &wout);
    ASSERT_TRUE(st.ok()) << st.to_string();
    for (const auto& p : m.params) {
      const Tensor& g = wout.at("grad/" + p);
      auto [it, fresh] = grads->emplace(p, g.clone());
      if (!fresh)
        for (int64_t i = 0; i < g.numel(); ++i) it->second.data<float>()[i] += g.data<float>()[i];
    }
  }
}

// Compiles `model` into `stages` bundles at the fixture's batch (one micro-batch).
std::vector<rt::Bundle> compile_bundles(const std::string& model, int stages, int64_t batch, const std::string& tag) {
  cg::CompileOptions options;
  options.model_path = testing::source_path(model);
  options.out_dir = testing::temp_dir(tag + std::to_string(stages));
  options.stages = stages;
  options.batch = batch;
  options.microbatches = 1;
  std::ostringstream report;
  auto summary = cg::compile_model(options, report);
  EXPECT_TRUE(summary.ok()) << summary.status().to_string();
  std::vector<rt::Bundle> bundles;
  if (!summary.ok()) return bundles;
  for (const auto& dir : summary->node_dirs) {
    auto b = rt::load_bundle(dir);
    EXPECT_TRUE(b.ok()) << b.status().to_string();
    if (b.ok()) bundles.push_back(std::move(b).value());
  }
  return bundles;
}

// Max |a - b| / max |b| over a tensor pair (b may be float64).
double relative_error(const Tensor& got, const Tensor& want) {
  double max_err = 0, max_ref = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    max_err = std::max(max_err, std::abs(static_cast<double>(got.data<float>()[i]) - ref_value(want, i)));
    max_ref = std::max(max_ref, std::abs(ref_value(want, i)));
  }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

class CnnGradients : public ::testing::TestWithParam<int> {};

TEST_P(CnnGradients, MatchPyTorchFloat64) {
  const int stages = GetParam();
  Reference ref = load_reference("models/cnn/reference.rvt");
  ASSERT_EQ(ref.grads.size(), 8u);  // 2 conv + 2 linear, weight and bias each
  std::vector<rt::Bundle> bundles = compile_bundles("models/cnn/cnn.onnx", stages, ref.input.dim(0), "grad");
  ASSERT_EQ(bundles.size(), static_cast<size_t>(stages));

  std::map<std::string, Tensor> grads;
  double loss = 0;
  run_stages(bundles, ref, &grads, &loss);
  EXPECT_NEAR(loss, ref.loss, 1e-5 * std::abs(ref.loss));
  ASSERT_EQ(grads.size(), ref.grads.size());
  for (const auto& [name, want] : ref.grads) {
    ASSERT_TRUE(grads.count(name)) << "no gradient for " << name;
    const Tensor& got = grads.at(name);
    ASSERT_EQ(got.shape(), want.shape()) << name;
    double max_err = 0, max_ref = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      max_err = std::max(max_err, std::abs(static_cast<double>(got.data<float>()[i]) - ref_value(want, i)));
      max_ref = std::max(max_ref, std::abs(ref_value(want, i)));
    }
    ASSERT_GT(max_ref, 0) << name;
    EXPECT_LE(max_err / max_ref, 1e-4) << name << " with " << stages << " stage(s)";
    std::ostringstream err;
    err << std::scientific << std::setprecision(2) << max_err / max_ref;
    RecordProperty(name, err.str());
  }
}

INSTANTIATE_TEST_SUITE_P(Stages, CnnGradients, ::testing::Values(1, 2, 3));

class ModelGradients : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(ModelGradients, MatchPyTorchFloat64) {
  const auto& [model, stages] = GetParam();
  Reference ref = load_reference("models/" + model + "/reference.rvt");
  ASSERT_FALSE(ref.grads.empty());
  std::vector<rt::Bundle> bundles =
      compile_bundles("models/" + model + "/" + model + "_small.onnx", stages, ref.input.dim(0), "grad_" + model);
  ASSERT_EQ(bundles.size(), static_cast<size_t>(stages));

  std::map<std::string, Tensor> grads, state;
  double loss = 0;
  run_stages(bundles, ref, &grads, &loss, &state);
  EXPECT_NEAR(loss, ref.loss, 1e-5 * std::max(1.0, std::abs(ref.loss)));
  EXPECT_EQ(grads.size(), ref.grads.size());
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, want] : ref.grads) {
    ASSERT_TRUE(grads.count(name)) << "no gradient for " << name;
    ASSERT_EQ(grads.at(name).shape(), want.shape()) << name;
    const double err = relative_error(grads.at(name), want);
    const double own = ref.fp32_error.count(name) ? ref.fp32_error.at(name) : 0.0;
    const double bar = own > 1e-5 ? std::max(1e-4, 10 * own) : 1e-4;
    EXPECT_LE(err, bar) << model << ": " << name << " (PyTorch float32's own error " << own << ")";
    if (err > worst) worst = err, worst_name = name;
  }
  std::ostringstream text;
  text << std::scientific << std::setprecision(2) << worst << " (" << worst_name << ")";
  RecordProperty("worst_relative_error", text.str());
  for (const auto& [name, want] : ref.running) {
    ASSERT_TRUE(state.count(name)) << "no running state " << name;
    // float32 batch statistics: ~1e-5 of rounding; an unbiased variance would be off by 1/(N-1).
    EXPECT_LE(relative_error(state.at(name), want), 1e-4) << model << ": " << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, ModelGradients,
                         ::testing::Combine(::testing::Values("resnet50", "inception_v3", "bert", "gpt_sorter",
                                                              "llama_block", "gpt2_small"),
                                            ::testing::Values(1, 2)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::to_string(std::get<1>(info.param)) + "stages";
                         });

}  // namespace
}  // namespace ravnest
