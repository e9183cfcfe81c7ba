// Whole-model gradients of the Fashion-MNIST CNN against PyTorch's float64
// gradients (models/cnn/reference.rvt, made by models/cnn/make_reference.py),
// through the compiler's stage programs run in-process: 1, 2 and 3 stages,
// with the boundary tensors handed from stage to stage as the wire would.
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
};

Reference load_reference() {
  auto tensors = rt::read_tensor_file(testing::source_path("models/cnn/reference.rvt"));
  EXPECT_TRUE(tensors.ok()) << tensors.status().to_string();
  Reference ref;
  for (auto& [name, t] : *tensors) {
    if (name == "input") ref.input = t;
    else if (name == "labels") ref.labels = t;
    else if (name == "loss") ref.loss = t.dtype() == DType::kF64 ? *t.data<double>() : *t.data<float>();
    else if (name.rfind("grad/", 0) == 0) ref.grads[name.substr(5)] = t;
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
// every parameter gradient and the loss.
void run_stages(const std::vector<rt::Bundle>& bundles, const Reference& ref, std::map<std::string, Tensor>* grads,
                double* loss) {
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
    for (const auto& [name, t] : bundles[s].weights) feeds[name] = t;
    if (m.first()) feeds[m.data_input] = ref.input;
    if (m.last()) feeds[m.labels_input] = ref.labels;
    for (const auto& t : m.recv) feeds[t.name] = wire.at(t.wire_id);
    TensorMap out;
    Status fst = fwd[s]->run(select(bundles[s].forward, feeds), &out);
    ASSERT_TRUE(fst.ok()) << fst.to_string();
    for (const auto& t : m.send) wire[t.wire_id] = out.at(t.name);
    stash[s] = feeds;
    for (auto& [k, v] : out) stash[s][k] = v;
    if (m.last()) *loss = *out.at(m.loss_output).data<float>() / static_cast<double>(m.training.batch);
  }
  std::map<uint32_t, Tensor> grad_wire;
  for (size_t s = K; s-- > 0;) {
    const rt::Manifest& m = bundles[s].manifest;
    TensorMap feeds = stash[s];
    if (m.last()) {
      Tensor seed = Tensor::empty(DType::kF32, {});
      *seed.data<float>() = 1.0f / static_cast<float>(m.training.batch);
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
    for (const auto& p : m.params) (*grads)[p] = wout.at("grad/" + p);
  }
}

class CnnGradients : public ::testing::TestWithParam<int> {};

TEST_P(CnnGradients, MatchPyTorchFloat64) {
  const int stages = GetParam();
  Reference ref = load_reference();
  ASSERT_EQ(ref.grads.size(), 8u);  // 2 conv + 2 linear, weight and bias each
  const int64_t batch = ref.input.dim(0);

  cg::CompileOptions options;
  options.model_path = testing::source_path("models/cnn/cnn.onnx");
  options.out_dir = testing::temp_dir("grad" + std::to_string(stages));
  options.stages = stages;
  options.batch = batch;
  options.microbatches = 1;
  std::ostringstream report;
  auto summary = cg::compile_model(options, report);
  ASSERT_TRUE(summary.ok()) << summary.status().to_string();
  std::vector<rt::Bundle> bundles;
  for (const auto& dir : summary->node_dirs) {
    auto b = rt::load_bundle(dir);
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    bundles.push_back(std::move(b).value());
  }
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

}  // namespace
}  // namespace ravnest
