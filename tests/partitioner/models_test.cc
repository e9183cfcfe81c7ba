// The cost model (per-op F/B/W seconds from FLOPs, bytes and a profile; transfer
// times) and the memory model (per-stage bytes, in-flight micro-batches by
// schedule, the infeasible-memory error and its suggestions).
#include <gtest/gtest.h>

#include "frontend/import.h"
#include "partitioner/cost_model.h"
#include "partitioner/memory_model.h"

namespace ravnest::part {
namespace {

DeviceProfile device(double gemm, double conv, double bandwidth_gbps) {
  DeviceProfile d;
  d.id = "d";
  d.address = "d:1";
  d.cores = 1;
  d.gemm_gflops = gemm;
  d.conv_gflops = conv;
  d.memory_bandwidth_gbps = bandwidth_gbps;
  d.memory_bytes = int64_t{1} << 30;
  return d;
}

TEST(CostModel, OpTimesFollowClassThroughputAndBandwidth) {
  CostModelOptions o;
  o.kernel_overhead_s = 0;
  DeviceProfile d = device(100, 50, 10);
  fe::OpCost conv{2e9, 2e9, 4e9, 1e9};
  PassTimes t = op_times(conv, OpClass::kConv, d, o);
  EXPECT_DOUBLE_EQ(t.f, 2e9 / 50e9 + 1e9 / 10e9);
  EXPECT_DOUBLE_EQ(t.b, 2e9 / 50e9 + 1e9 / 10e9);
  EXPECT_DOUBLE_EQ(t.w, 4e9 / 50e9 + 1e9 / 10e9);
  PassTimes g = op_times(conv, OpClass::kGemm, d, o);
  EXPECT_DOUBLE_EQ(g.f, 2e9 / 100e9 + 1e9 / 10e9);
  fe::OpCost relu{1e6, 1e6, 0, 8e6};
  PassTimes r = op_times(relu, OpClass::kOther, d, o);
  EXPECT_GT(r.f, 0);
  EXPECT_EQ(r.w, 0);  // no W work, no W time
  // Twice the device, half the time.
  PassTimes fast = op_times(conv, OpClass::kConv, device(200, 100, 20), o);
  EXPECT_DOUBLE_EQ(fast.f * 2, t.f);
  EXPECT_EQ(op_class("", "Conv"), OpClass::kConv);
  EXPECT_EQ(op_class(kRavnestDomain, "ConvGradWeight"), OpClass::kConv);
  EXPECT_EQ(op_class("", "MatMul"), OpClass::kGemm);
  EXPECT_EQ(op_class("", "Relu"), OpClass::kOther);
}

TEST(CostModel, TransferIsLatencyPlusBytesOverBandwidth) {
  LinkEstimate link{8e9, 1e-3, "links"};  // 1 GB/s
  EXPECT_DOUBLE_EQ(transfer_seconds(1e9, link), 1.001);
  EXPECT_DOUBLE_EQ(transfer_seconds(0, link), 1e-3);
}

TEST(CostModel, CnnTotalsMatchTheModel) {
  fe::ImportOptions io;
  io.batch = 8;
  auto g = fe::import_model(std::string(RAVNEST_SOURCE_DIR) + "/models/cnn/cnn.onnx", io);
  ASSERT_TRUE(g.ok()) << g.status().message();
  ModelTotals t = model_totals(*g);
  EXPECT_DOUBLE_EQ(t.param_bytes, 421642.0 * 4);
  EXPECT_GT(t.flops[static_cast<int>(OpClass::kConv)], t.flops[static_cast<int>(OpClass::kGemm)]);
  EXPECT_GT(t.flops[static_cast<int>(OpClass::kOther)], 0);
  EXPECT_GE(t.boundary_bytes, 8.0 * 32 * 28 * 28 * 4);  // conv1's output
  DeviceProfile d = device(100, 50, 10);
  std::vector<PassTimes> times = graph_times(*g, d);
  ASSERT_EQ(times.size(), g->nodes.size());
  double sum = 0;
  for (const PassTimes& p : times) sum += p.total();
  EXPECT_NEAR(model_seconds(t, d), sum, 1e-9 * sum);
  // Twice the device: the time beyond the launch overheads halves.
  const double overhead = t.kernels * CostModelOptions{}.kernel_overhead_s;
  EXPECT_NEAR(2 * (model_seconds(t, device(200, 100, 20)) - overhead), model_seconds(t, d) - overhead, 1e-9 * sum);
  // With the narrow-convolution figures (conv1 has one input channel) the whole-model time still equals the sum of
  // the ops' times, and it is longer: conv1's F and W run below conv_gflops.
  DeviceProfile narrow = d;
  narrow.conv_narrow_gflops = 20;
  narrow.conv_narrow_grad_weight_gflops = 10;
  double narrow_sum = 0;
  for (const PassTimes& p : graph_times(*g, narrow)) narrow_sum += p.total();
  EXPECT_NEAR(model_seconds(t, narrow), narrow_sum, 1e-9 * narrow_sum);
  EXPECT_GT(model_seconds(t, narrow), model_seconds(t, d) * 1.01);
}

TEST(MemoryModel, InFlightBySchedule) {
  EXPECT_EQ(microbatches_in_flight(ScheduleKind::k1F1B, 4, 0, 8), 4);
  EXPECT_EQ(microbatches_in_flight(ScheduleKind::k1F1B, 4, 3, 8), 1);
  EXPECT_EQ(microbatches_in_flight(ScheduleKind::kZbH1, 4, 1, 8), 3);
  EXPECT_EQ(microbatches_in_flight(ScheduleKind::k1F1B, 4, 0, 2), 2);
  EXPECT_EQ(microbatches_in_flight(ScheduleKind::kZbH2, 4, 0, 16), 7);
  EXPECT_EQ(microbatches_in_flight(ScheduleKind::kGpipe, 4, 3, 8), 8);
  EXPECT_EQ(optimizer_state_factor(OptimizerKind::kSgdMomentum), 1);
  EXPECT_EQ(optimizer_state_factor(OptimizerKind::kAdamW), 2);
  EXPECT_EQ(optimizer_state_factor(OptimizerKind::kLamb), 2);
  EXPECT_EQ(optimizer_state_factor(OptimizerKind::kSgd), 0);
}

TEST(MemoryModel, StageBytes) {
  MemoryPlan plan{OptimizerKind::kAdamW, ScheduleKind::k1F1B, 8};
  StageMemory m = stage_memory({100, 10, 7}, 4, 1, plan);
  EXPECT_EQ(m.in_flight, 3);
  EXPECT_DOUBLE_EQ(m.total(), 100 + 100 + 200 + 30 + 7);
}

TEST(MemoryModel, InfeasibleNamesMachineShortfallAndWhatFits) {
  // Two stages; stage 0 holds 2 micro-batches of 100 bytes under 1F1B.
  std::vector<StageFootprint> stages = {{100, 100, 0}, {100, 100, 0}};
  MemoryPlan plan{OptimizerKind::kSgdMomentum, ScheduleKind::k1F1B, 4};
  // Stage 0 needs 300 + 200 = 500, stage 1 needs 300 + 100 = 400.
  EXPECT_TRUE(check_memory(stages, {{"a", 500}, {"b", 400}}, plan).ok());
  Status st = check_memory(stages, {{"a", 450}, {"b", 400}}, plan);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kResourceExhausted);
  EXPECT_NE(st.message().find("machine 'a' (stage 0) needs 500 bytes"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("short by 50 bytes"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find("machine 'b'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("--microbatches 1"), std::string::npos) << st.message();
  // Params dominate: more stages help. An even split over q stages needs 3*400/q
  // (params, grads, momentum) + 200/q * min(4, q) on its first stage: 500 at q = 4, 400 at q = 5.
  std::vector<StageFootprint> heavy = {{200, 100, 0}, {200, 100, 0}};
  Status more = check_memory(heavy, {{"a", 470}, {"b", 470}}, plan);
  ASSERT_FALSE(more.ok());
  EXPECT_NE(more.message().find("over 5 stages"), std::string::npos) << more.message();
}

}  // namespace
}  // namespace ravnest::part
