// The fixed costs of a pass in the cost model: the profile's measured executor
// (program_overhead_s) and trainer (pass_overhead_s) overheads are read, written
// back and preferred to the defaults; a profile without them still loads and gets
// the defaults; a stage pass's fixed cost is the sum of the two.
#include <gtest/gtest.h>

#include <cmath>

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

}  // namespace
}  // namespace ravnest::part
