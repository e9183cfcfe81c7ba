// Plain-loop kernel timings: builds each kernel through KernelRegistry::global() (the
// candidate the executor would pick) for shapes taken from the target models (CNN
// pooling at batch 64, ResNet BatchNorm at 64x64x8x8, BERT LayerNorm at 8x128x256,
// attention Softmax at 8x4x128x128, ...), fills the inputs with deterministic values
// (integer inputs with valid indices/labels), and prints the median and the fastest
// time of one run.
//
//   OMP_NUM_THREADS=1 ravnest-kernels-bench [--ms 200] [--filter substring] [--check]
//
// --check runs each kernel once on fresh inputs and prints a hash of every output and
// (updated in place) input instead of timing: equal hashes at OMP_NUM_THREADS=1 and 2
// show that the threaded loops compute the same bits as the serial ones.
//
// Not a test: nothing is asserted. Optimizer kernels update their inputs in place,
// which does not change their cost.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "runtime/kernel.h"

namespace {

using namespace ravnest;
using Clock = std::chrono::steady_clock;

struct Case {
  std::string label;
  Node node;
  std::vector<ValueInfo> inputs, outputs;
  // Fills integer inputs (indices, labels, axes) with valid values; floats are filled for every case.
  std::function<void(std::vector<rt::Tensor>&)> fill_ints;
};

Node make_node(const std::string& op, bool ravnest_domain, std::map<std::string, AttrValue> attrs = {}) {
  Node n;
  n.name = "bench_" + op;
  n.op = op;
  n.domain = ravnest_domain ? kRavnestDomain : "";
  n.attrs = std::move(attrs);
  return n;
}

ValueInfo f32(const std::string& name, const Shape& shape) { return ValueInfo::of(name, DType::kF32, shape); }
ValueInfo i64(const std::string& name, const Shape& shape) { return ValueInfo::of(name, DType::kI64, shape); }

void set_io(Case* c) {
  for (size_t i = 0; i < c->inputs.size(); ++i) c->node.inputs.push_back(c->inputs[i].name);
  for (size_t i = 0; i < c->outputs.size(); ++i) c->node.outputs.push_back(c->outputs[i].name);
}

uint32_t lcg(uint32_t* state) {
  *state = *state * 1664525u + 1013904223u;
  return *state >> 8;
}

// Indices a MaxPool with these attributes produces for X (computed by the registry's MaxPool itself).
std::function<void(std::vector<rt::Tensor>&)> maxpool_indices(std::map<std::string, AttrValue> attrs, Shape x,
                                                              Shape y) {
  return [attrs, x, y](std::vector<rt::Tensor>& in) {
    Case pool{"", make_node("MaxPool", false, attrs), {f32("x", x)}, {f32("y", y), i64("i", y)}, {}};
    set_io(&pool);
    rt::KernelRequest request;
    request.node = &pool.node;
    request.inputs = pool.inputs;
    request.outputs = pool.outputs;
    auto kernel = rt::KernelRegistry::global().build(request);
    if (!kernel.ok()) {
      std::fprintf(stderr, "error: %s\n", kernel.status().message().c_str());
      std::exit(1);
    }
    rt::Tensor tx = rt::Tensor::zeros(DType::kF32, x), ty = rt::Tensor::zeros(DType::kF32, y);
    uint32_t s = 7;
    for (int64_t k = 0; k < tx.numel(); ++k) tx.data<float>()[k] = static_cast<float>(lcg(&s) % 2001) / 1000.0f - 1.0f;
    Status st = (*kernel)->run({&tx}, {&ty, &in[1]});
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s\n", st.message().c_str());
      std::exit(1);
    }
  };
}

std::function<void(std::vector<rt::Tensor>&)> random_ints(size_t input, int64_t bound) {
  return [input, bound](std::vector<rt::Tensor>& in) {
    uint32_t s = 11;
    for (int64_t k = 0; k < in[input].numel(); ++k) in[input].data<int64_t>()[k] = lcg(&s) % bound;
  };
}

std::vector<Case> cases() {
  std::vector<Case> all;
  auto add = [&](std::string label, Node node, std::vector<ValueInfo> in, std::vector<ValueInfo> out,
                 std::function<void(std::vector<rt::Tensor>&)> fill = {}) {
    Case c{std::move(label), std::move(node), std::move(in), std::move(out), std::move(fill)};
    set_io(&c);
    all.push_back(std::move(c));
  };
  using Ints = std::vector<int64_t>;
  // CNN (Fashion-MNIST, batch 64): 2x2/2 max pooling.
  const std::map<std::string, AttrValue> pool2{{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}}};
  for (int64_t c : {32, 64}) {
    const int64_t h = c == 32 ? 28 : 14;
    const Shape x{64, c, h, h}, y{64, c, h / 2, h / 2};
    const std::string tag = "cnn 64x" + std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(h);
    add("MaxPool 2x2/2 " + tag, make_node("MaxPool", false, pool2), {f32("x", x)}, {f32("y", y), i64("i", y)});
    add("MaxPoolGrad 2x2/2 " + tag, make_node("MaxPoolGrad", true), {f32("dy", y), i64("i", y)}, {f32("dx", x)},
        maxpool_indices(pool2, x, y));
  }
  // ResNet stem pool: 3x3/2, pad 1 on 64x64x16x16.
  const std::map<std::string, AttrValue> pool3{
      {"kernel_shape", Ints{3, 3}}, {"strides", Ints{2, 2}}, {"pads", Ints{1, 1, 1, 1}}};
  {
    const Shape x{64, 64, 16, 16}, y{64, 64, 8, 8};
    add("MaxPool 3x3/2 p1 resnet 64x64x16x16", make_node("MaxPool", false, pool3), {f32("x", x)},
        {f32("y", y), i64("i", y)});
    add("MaxPoolGrad 3x3/2 p1 resnet 64x64x16x16", make_node("MaxPoolGrad", true), {f32("dy", y), i64("i", y)},
        {f32("dx", x)}, maxpool_indices(pool3, x, y));
  }
  // ResNet BatchNorm gradients at 64x64x8x8.
  {
    const Shape x{64, 64, 8, 8}, c{64};
    const std::map<std::string, AttrValue> bn{{"training_mode", int64_t{1}}, {"epsilon", 1e-5f}};
    add("BatchNormalizationGrad resnet 64x64x8x8", make_node("BatchNormalizationGrad", true, bn),
        {f32("dy", x), f32("x", x), f32("scale", c)}, {f32("dx", x)});
    add("BatchNormalizationParamGrad resnet 64x64x8x8", make_node("BatchNormalizationParamGrad", true, bn),
        {f32("dy", x), f32("x", x)}, {f32("dscale", c), f32("dbias", c)});
  }
  // BERT LayerNorm gradients at 8x128x256.
  {
    const Shape x{8, 128, 256}, stats{8, 128, 1}, d{256};
    const std::map<std::string, AttrValue> ln{{"axis", int64_t{-1}}};
    add("LayerNormalizationGrad bert 8x128x256", make_node("LayerNormalizationGrad", true, ln),
        {f32("dy", x), f32("x", x), f32("scale", d), f32("mean", stats), f32("inv_std", stats)}, {f32("dx", x)});
    add("LayerNormalizationParamGrad bert 8x128x256", make_node("LayerNormalizationParamGrad", true, ln),
        {f32("dy", x), f32("x", x), f32("mean", stats), f32("inv_std", stats)}, {f32("dscale", d), f32("db", d)});
  }
  // Attention softmax 8x4x128x128 and its mask.
  {
    const Shape s{8, 4, 128, 128}, mask{1, 1, 128, 128};
    const std::map<std::string, AttrValue> ax{{"axis", int64_t{-1}}};
    add("Softmax attention 8x4x128x128", make_node("Softmax", false, ax), {f32("x", s)}, {f32("y", s)});
    add("SoftmaxGrad attention 8x4x128x128", make_node("SoftmaxGrad", true, ax), {f32("dy", s), f32("y", s)},
        {f32("dx", s)});
    add("Add mask 8x4x128x128 + 1x1x128x128", make_node("Add", false), {f32("a", s), f32("b", mask)}, {f32("y", s)});
    add("Where mask 1x1x128x128 ? 8x4x128x128 : 1", make_node("Where", false),
        {ValueInfo::of("c", DType::kBool, mask), f32("a", s), f32("b", {1})}, {f32("y", s)});
  }
  // Broadcasting binaries, unary plain loops and reductions at BERT's activation shapes.
  {
    const Shape x{8, 128, 256}, ff{8, 128, 1024};
    add("Add bias 8x128x256 + 256", make_node("Add", false), {f32("a", x), f32("b", {256})}, {f32("y", x)});
    add("Mul 8x128x1024 * 8x128x1024", make_node("Mul", false), {f32("a", ff), f32("b", ff)}, {f32("y", ff)});
    add("Div 8x128x256 / 8x128x1", make_node("Div", false), {f32("a", x), f32("b", {8, 128, 1})}, {f32("y", x)});
    add("Erf gelu 8x128x1024", make_node("Erf", false), {f32("x", ff)}, {f32("y", ff)});
    add("ErfGrad gelu 8x128x1024", make_node("ErfGrad", true), {f32("dy", ff), f32("x", ff)}, {f32("dx", ff)});
    add("ReduceSum bias-grad 8x128x256 axes 0,1", make_node("ReduceSum", false, {{"keepdims", int64_t{0}}}),
        {f32("x", x), i64("axes", {2})}, {f32("y", {256})}, [](std::vector<rt::Tensor>& in) {
          in[1].data<int64_t>()[0] = 0;
          in[1].data<int64_t>()[1] = 1;
        });
    add("ReduceMean rmsnorm 8x128x256 axis -1",
        make_node("ReduceMean", false, {{"axes", Ints{-1}}, {"keepdims", int64_t{1}}}), {f32("x", x)},
        {f32("y", {8, 128, 1})});
    add("ReduceGrad 8x128x1 -> 8x128x256", make_node("ReduceGrad", true, {{"scale", 1.0f / 256}}),
        {f32("dy", {8, 128, 1})}, {f32("dx", x)});
  }
  // Attention head transposes.
  add("Transpose 8x128x4x64 perm 0,2,1,3", make_node("Transpose", false, {{"perm", Ints{0, 2, 1, 3}}}),
      {f32("x", {8, 128, 4, 64})}, {f32("y", {8, 4, 128, 64})});
  add("Transpose 8x4x128x64 perm 0,1,3,2", make_node("Transpose", false, {{"perm", Ints{0, 1, 3, 2}}}),
      {f32("x", {8, 4, 128, 64})}, {f32("y", {8, 4, 64, 128})});
  // Embeddings: vocab 1000 x 256, 8x128 tokens.
  add("Gather embedding 1000x256 by 8x128", make_node("Gather", false), {f32("w", {1000, 256}), i64("i", {8, 128})},
      {f32("y", {8, 128, 256})}, random_ints(1, 1000));
  add("GatherGrad embedding 8x128x256 -> 1000x256", make_node("GatherGrad", true),
      {f32("dy", {8, 128, 256}), i64("i", {8, 128})}, {f32("dw", {1000, 256})}, random_ints(1, 1000));
  // Language-model loss over 1024 positions and 1000 classes.
  add("SoftmaxCrossEntropyLoss 1024x1000", make_node("SoftmaxCrossEntropyLoss", false),
      {f32("s", {1024, 1000}), i64("l", {1024})}, {f32("loss", {}), f32("lp", {1024, 1000})}, random_ints(1, 1000));
  add("SoftmaxCrossEntropyLossGrad 1024x1000", make_node("SoftmaxCrossEntropyLossGrad", true),
      {f32("dl", {}), f32("lp", {1024, 1000}), i64("l", {1024})}, {f32("ds", {1024, 1000})}, random_ints(2, 1000));
  // Optimizers over a 1M-parameter tensor.
  {
    const Shape p{1024, 1024};
    add("SGD momentum 1M", make_node("SGD", true, {{"momentum", 0.9f}, {"weight_decay", 1e-4f}}),
        {f32("p", p), f32("g", p), f32("v", p), f32("lr", {})}, {});
    add("AdamW 1M", make_node("AdamW", true, {{"weight_decay", 0.01f}}),
        {f32("p", p), f32("g", p), f32("m", p), f32("v", p), i64("t", {}), f32("lr", {})}, {});
  }
  return all;
}

struct Timing {
  double median = 0, min = 0;  // seconds of one run
};

// Median and fastest run of the case's kernel, after one warm-up run. On a shared
// machine the fastest run is the one the scheduler did not interrupt.
Timing time_case(const Case& c, double budget_s, std::string* impl, uint64_t* hash) {
  rt::KernelRequest request;
  request.node = &c.node;
  request.inputs = c.inputs;
  request.outputs = c.outputs;
  auto kernel = rt::KernelRegistry::global().build(request, impl);
  if (!kernel.ok()) {
    std::fprintf(stderr, "error: %s: %s\n", c.label.c_str(), kernel.status().message().c_str());
    std::exit(1);
  }
  std::vector<rt::Tensor> in, out;
  uint32_t s = 3;
  for (const ValueInfo& v : c.inputs) {
    rt::Tensor t = rt::Tensor::zeros(v.dtype, v.static_shape());
    if (v.dtype == DType::kF32)
      for (int64_t k = 0; k < t.numel(); ++k) t.data<float>()[k] = static_cast<float>(lcg(&s) % 2001) / 1000.0f + 0.5f;
    if (v.dtype == DType::kBool)
      for (int64_t k = 0; k < t.numel(); ++k) t.data<uint8_t>()[k] = lcg(&s) & 1;
    in.push_back(std::move(t));
  }
  if (c.fill_ints) c.fill_ints(in);
  for (const ValueInfo& v : c.outputs) out.push_back(rt::Tensor::zeros(v.dtype, v.static_shape()));
  std::vector<rt::Tensor*> in_ptrs, out_ptrs;
  for (rt::Tensor& t : in) in_ptrs.push_back(&t);
  for (rt::Tensor& t : out) out_ptrs.push_back(&t);
  auto run_once = [&]() {
    Status st = (*kernel)->run(in_ptrs, out_ptrs, rt::RunContext{});
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s: %s\n", c.label.c_str(), st.message().c_str());
      std::exit(1);
    }
  };
  run_once();
  if (hash) {
    *hash = 0xCBF29CE484222325ull;
    for (const std::vector<rt::Tensor>* ts : {&in, &out})
      for (const rt::Tensor& t : *ts)
        for (size_t k = 0; k < t.bytes(); ++k)
          *hash = (*hash ^ static_cast<const uint8_t*>(t.raw())[k]) * 0x100000001B3ull;
    return Timing{};
  }
  std::vector<double> samples;
  const Clock::time_point start = Clock::now();
  while (samples.size() < 5 || std::chrono::duration<double>(Clock::now() - start).count() < budget_s) {
    const Clock::time_point t0 = Clock::now();
    run_once();
    samples.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    if (samples.size() >= 20000) break;
  }
  std::sort(samples.begin(), samples.end());
  return Timing{samples[samples.size() / 2], samples.front()};
}

}  // namespace

int main(int argc, char** argv) {
  int ms = 200;
  std::string filter;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--check") check = true;
    else if (arg == "--ms" && i + 1 < argc) ms = std::atoi(argv[++i]);
    else if (arg == "--filter" && i + 1 < argc) filter = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--ms 200] [--filter substring] [--check]\n", argv[0]);
      return 2;
    }
  }
  const char* threads = std::getenv("OMP_NUM_THREADS");
  std::printf("OMP_NUM_THREADS=%s, %d ms per kernel\n%-48s %-8s %12s %12s\n", threads ? threads : "(unset)", ms,
              "kernel", "impl", "median_us", "min_us");
  for (const Case& c : cases()) {
    if (!filter.empty() && c.label.find(filter) == std::string::npos) continue;
    std::string impl;
    uint64_t hash = 0;
    const Timing t = time_case(c, ms / 1000.0, &impl, check ? &hash : nullptr);
    if (check) {
      std::printf("%-48s %-8s %016llx\n", c.label.c_str(), impl.c_str(), static_cast<unsigned long long>(hash));
      continue;
    }
    std::printf("%-48s %-8s %12.1f %12.1f\n", c.label.c_str(), impl.c_str(), t.median * 1e6, t.min * 1e6);
  }
  return 0;
}
