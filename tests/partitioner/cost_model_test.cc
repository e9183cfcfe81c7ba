// The fixed costs of a pass in the cost model: the profile's measured executor
// (program_overhead_s) and trainer (pass_overhead_s) overheads are read, written
// back and preferred to the defaults; a profile without them still loads and gets
// the defaults; a stage pass's fixed cost is the sum of the two. Convolutions and their
// weight gradients with few input channels run at the profile's narrow figures.
#include <gtest/gtest.h>

#include <cmath>

#include "frontend/op_table.h"
#include "partitioner/cost_model.h"
#include "partitioner/devices.h"

namespace ravnest::part {
namespace {

Json profile() {
  Json d = Json::object();
  d.set("id", "here");
  d.set("address", "127.0.0.1:29500");
  d.set("kind", "cpu");
  d.set("cores", 2);
  d.set("gemm_gflops", 190.0);
  d.set("conv_gflops", 170.0);
  d.set("memory_bandwidth_gbps", 40.0);
  d.set("memory_bytes", int64_t{8} << 30);
  return d;
}

TEST(CostModelOverheads, OldProfileWithoutPassOverheadLoadsAndGetsTheDefaults) {
  auto d = parse_device(profile(), "old.json");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->pass_overhead_s, 0);
  CostModelOptions o;
  o.program_overhead_s = 4e-6;
  o.pass_overhead_s = 2.5e-5;
  EXPECT_DOUBLE_EQ(program_overhead(*d, o), 4e-6);
  EXPECT_DOUBLE_EQ(pass_overhead(*d, o), 2.5e-5);
  EXPECT_DOUBLE_EQ(stage_pass_overhead(*d, o), 4e-6 + 2.5e-5);
  // The built-in default is the one documented in docs/devices.md.
  EXPECT_DOUBLE_EQ(pass_overhead(*d), 3e-5);
  // Writing it back adds no field it did not have.
  EXPECT_FALSE(device_to_json(*d).has("pass_overhead_s"));
}

TEST(CostModelOverheads, MeasuredOverheadsWinAndRoundTrip) {
  Json j = profile();
  j.set("program_overhead_s", 2e-6);
  j.set("pass_overhead_s", 3.6e-5);
  auto d = parse_device(j, "here.json");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_DOUBLE_EQ(d->pass_overhead_s, 3.6e-5);
  CostModelOptions o;
  o.pass_overhead_s = 1;  // never used: the profile has its own
  EXPECT_DOUBLE_EQ(pass_overhead(*d, o), 3.6e-5);
  EXPECT_DOUBLE_EQ(stage_pass_overhead(*d, o), 2e-6 + 3.6e-5);
  auto again = parse_device(device_to_json(*d), "again.json");
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_DOUBLE_EQ(again->pass_overhead_s, 3.6e-5);
}

TEST(CostModelOverheads, PassOverheadOutOfRangeIsAnErrorNamingTheField) {
  for (double bad : {-1e-6, 2.0}) {
    Json j = profile();
    j.set("pass_overhead_s", bad);
    auto d = parse_device(j, "here.json");
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_NE(d.status().message().find("pass_overhead_s"), std::string::npos) << d.status().message();
    EXPECT_NE(d.status().message().find("'here'"), std::string::npos) << d.status().message();
  }
}

TEST(CostModelOverheads, KernelTimesDoNotIncludeThePassOverhead) {
  auto d = parse_device(profile(), "here.json");
  ASSERT_TRUE(d.ok());
  CostModelOptions small, large;
  large.pass_overhead_s = 1;
  // The pass overhead is added once per stage pass (codegen), never per kernel.
  EXPECT_DOUBLE_EQ(kernel_seconds(1e6, 1e6, OpClass::kGemm, *d, small),
                   kernel_seconds(1e6, 1e6, OpClass::kGemm, *d, large));
  ModelTotals t;
  t.kernels = 3;
  t.flops[1] = 1e9;
  EXPECT_DOUBLE_EQ(model_seconds(t, *d, small), model_seconds(t, *d, large));
}

// A convolution with one input channel runs at the profile's conv_narrow_gflops, one with 64 at
// conv_gflops, one in between in between; without the narrow figure every convolution is at conv_gflops.
TEST(CostModelConvolutions, NarrowReductionsRunAtTheMeasuredNarrowThroughput) {
  auto d = parse_device(profile(), "old.json");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_DOUBLE_EQ(conv_forward_gflops(*d, 9), 170.0);
  Json with = profile();
  with.set("conv_narrow_gflops", 17.0);
  auto n = parse_device(with, "new.json");
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_DOUBLE_EQ(conv_forward_gflops(*n, 9), 17.0);
  EXPECT_DOUBLE_EQ(conv_forward_gflops(*n, 576), 170.0);
  EXPECT_DOUBLE_EQ(conv_forward_gflops(*n, 4608), 170.0);
  const double mid = conv_forward_gflops(*n, 72);  // halfway in log between 9 and 576
  EXPECT_NEAR(mid, 17.0 * std::pow(10.0, 0.5), 1e-9);
  EXPECT_DOUBLE_EQ(device_to_json(*n).get_double("conv_narrow_gflops").value(), 17.0);
  with.set("conv_narrow_gflops", -1.0);
  EXPECT_FALSE(parse_device(with, "bad.json").ok());
}

// A weight gradient program: ConvGradWeight of a 3x3 convolution with `cin` input channels and 32 outputs on a
// batch of 8 28x28 images (the profile's narrow shape when cin is 1).
Graph grad_weight_program(int64_t cin) {
  Graph g;
  g.name = "w";
  g.opset = 17;
  g.inputs = {"dy", "x"};
  g.set_value(ValueInfo::of("dy", DType::kF32, {8, 32, 28, 28}));
  g.set_value(ValueInfo::of("x", DType::kF32, {8, cin, 28, 28}));
  g.set_value(ValueInfo::of("dw", DType::kF32, {32, cin, 3, 3}));
  g.set_value(ValueInfo::of("db", DType::kF32, {32}));
  Node n;
  n.domain = kRavnestDomain;
  n.op = "ConvGradWeight";
  n.name = "grad_weight";
  n.inputs = {"dy", "x"};
  n.outputs = {"dw", "db"};
  n.attrs["kernel_shape"] = std::vector<int64_t>{3, 3};
  n.attrs["pads"] = std::vector<int64_t>{1, 1, 1, 1};
  g.nodes.push_back(n);
  g.outputs = {"dw", "db"};
  return g;
}

// The weight gradient of a convolution with one input channel runs at the profile's
// conv_narrow_grad_weight_gflops (in between for wider ones, conv_gflops from 64 channels on); a profile
// without the figure (written before it) loads and predicts every weight gradient at conv_gflops as before.
TEST(CostModelConvolutions, NarrowWeightGradientsRunAtTheMeasuredNarrowThroughput) {
  auto old = parse_device(profile(), "old.json");
  ASSERT_TRUE(old.ok()) << old.status().message();
  EXPECT_EQ(old->conv_narrow_grad_weight_gflops, 0);
  EXPECT_DOUBLE_EQ(conv_grad_weight_gflops(*old, 9), 170.0);
  EXPECT_FALSE(device_to_json(*old).has("conv_narrow_grad_weight_gflops"));
  Json with = profile();
  with.set("conv_narrow_gflops", 40.0);
  with.set("conv_narrow_grad_weight_gflops", 17.0);
  auto n = parse_device(with, "new.json");
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_DOUBLE_EQ(conv_grad_weight_gflops(*n, 9), 17.0);
  EXPECT_DOUBLE_EQ(conv_forward_gflops(*n, 9), 40.0);  // the forward keeps its own figure
  EXPECT_NEAR(conv_grad_weight_gflops(*n, 72), 17.0 * std::pow(10.0, 0.5), 1e-9);
  EXPECT_DOUBLE_EQ(conv_grad_weight_gflops(*n, 576), 170.0);
  EXPECT_DOUBLE_EQ(device_to_json(*n).get_double("conv_narrow_grad_weight_gflops").value(), 17.0);

  // In a program: one input channel costs its FLOPs at 17 instead of 170 GFLOP/s, the bytes unchanged.
  const Graph narrow = grad_weight_program(1);
  const fe::OpDef* def = fe::find_op(kRavnestDomain, "ConvGradWeight", 17);
  ASSERT_TRUE(def && def->cost);
  const double flops = def->cost(narrow.nodes[0], narrow).flops;
  ASSERT_GT(flops, 0);
  const double before = graph_times(narrow, *old).at(0).f, after = graph_times(narrow, *n).at(0).f;
  EXPECT_NEAR(after - before, flops / 17e9 - flops / 170e9, 1e-12);
  // 64 input channels: the wide figure either way.
  const Graph wide = grad_weight_program(64);
  EXPECT_DOUBLE_EQ(graph_times(wide, *n).at(0).f, graph_times(wide, *old).at(0).f);

  // The whole model's forward Conv (what the partitioner balances): its W at the same narrow figure.
  Graph model;
  model.name = "model";
  model.opset = 17;
  model.inputs = {"x"};
  model.set_value(ValueInfo::of("x", DType::kF32, {8, 1, 28, 28}));
  model.set_value(ValueInfo::of("w", DType::kF32, {32, 1, 3, 3}));
  model.set_value(ValueInfo::of("y", DType::kF32, {8, 32, 28, 28}));
  Node conv;
  conv.op = "Conv";
  conv.name = "conv";
  conv.inputs = {"x", "w"};
  conv.outputs = {"y"};
  conv.attrs["kernel_shape"] = std::vector<int64_t>{3, 3};
  conv.attrs["pads"] = std::vector<int64_t>{1, 1, 1, 1};
  model.nodes.push_back(conv);
  model.outputs = {"y"};
  const fe::OpDef* conv_def = fe::find_op("", "Conv", 17);
  ASSERT_TRUE(conv_def && conv_def->cost);
  const double weight_flops = conv_def->cost(model.nodes[0], model).backward_weight_flops;
  ASSERT_GT(weight_flops, 0);
  EXPECT_NEAR(graph_times(model, *n).at(0).w - graph_times(model, *old).at(0).w,
              weight_flops / 17e9 - weight_flops / 170e9, 1e-12);

  with.set("conv_narrow_grad_weight_gflops", -1.0);
  EXPECT_FALSE(parse_device(with, "bad.json").ok());
}

}  // namespace
}  // namespace ravnest::part
