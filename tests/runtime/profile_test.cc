// The profile's narrow-convolution figures: the weight gradient of a one-input-channel
// convolution is timed through the runtime's own ConvGradWeight kernel and gives a positive,
// finite GFLOP/s, and profile_json writes it beside the forward figure under the field name
// of docs/devices.md. No timing is asserted beyond "measured at all".
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "runtime/profile/profile.h"

namespace ravnest::rt {
namespace {

TEST(Profile, NarrowConvolutionWeightGradientIsMeasuredWithTheRuntimesKernel) {
  Status st;
  const double gflops = measure_conv_narrow_grad_weight_gflops(std::chrono::milliseconds(50), &st);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_GT(gflops, 0);
  EXPECT_TRUE(std::isfinite(gflops));
}

TEST(Profile, JsonCarriesBothNarrowConvolutionFigures) {
  MachineMeasurement m;
  m.cores = 2;
  m.gemm_gflops = 190;
  m.conv_gflops = 170;
  m.conv_narrow_gflops = 60;
  m.conv_narrow_grad_weight_gflops = 55;
  m.memory_bandwidth_gbps = 30;
  m.memory_available_bytes = int64_t{1} << 30;
  const Json j = profile_json(m, "here", "127.0.0.1:29500");
  EXPECT_DOUBLE_EQ(j.get_double("conv_narrow_gflops").value(), 60);
  EXPECT_DOUBLE_EQ(j.get_double("conv_narrow_grad_weight_gflops").value(), 55);
}

}  // namespace
}  // namespace ravnest::rt
