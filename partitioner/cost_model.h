// Cost model: predicted F, B and W seconds of each op on a profiled device, and
// the transfer time of a tensor over a link.
//
// Guarantees:
//  * time(pass) = flops(pass) / throughput(op class) + bytes(pass) / memory
//    bandwidth + a fixed per-kernel overhead, where the op class is conv (Conv and
//    its gradients: the device's conv_gflops), gemm (Gemm, MatMul: gemm_gflops) or
//    other (everything else: gemm_gflops scaled by other_efficiency), a Conv or ConvGradWeight with few
//    input channels at conv_forward_gflops / conv_grad_weight_gflops (in graph_times); the overhead
//    is the profile's measured kernel_overhead_s where it has one. A pass with
//    no work (0 FLOPs, e.g. W of ReLU) takes 0 s; F always moves the forward bytes.
//  * A stage program's pass (F, B or W) adds once, beside its kernels,
//    stage_pass_overhead = the executor's program_overhead_s + the trainer's
//    pass_overhead_s (each the profile's where measured); the three overheads
//    are measured apart (runtime/profile/profile.h) and none holds another.
//  * B and W move the forward bytes again (they read the forward's inputs and
//    the output gradient, and write a gradient of the same size); graph_times and
//    model_totals add to W 3x the bytes of the node's parameters: the runtime sums
//    each micro-batch's weight gradient into the step's (read both, write one).
//  * transfer_seconds(bytes, link) = latency + bytes / bandwidth.
//  * Pure functions of their arguments: the same inputs give the same outputs.
#pragma once

#include <string>
#include <vector>

#include "common/graph.h"
#include "frontend/op_table.h"
#include "partitioner/devices.h"

namespace ravnest::part {

enum class OpClass { kConv, kGemm, kOther };
const char* op_class_name(OpClass c);  // "conv", "gemm", "other"
// The class of an op by (domain, op): Conv/ConvGradInput/ConvGradWeight are conv,
// Gemm/MatMul gemm, the rest other.
OpClass op_class(const std::string& domain, const std::string& op);

struct CostModelOptions {
  // Throughput of non-GEMM, non-conv FLOPs relative to gemm_gflops (elementwise
  // ops are bound by memory; their FLOPs run far below the GEMM peak).
  double other_efficiency = 0.05;
  double kernel_overhead_s = 2e-6;   // per kernel launch, every pass that runs
  double program_overhead_s = 5e-6;  // per run of a stage program (F, B or W) by the executor
  // Per pass (F, B or W) of the trainer in a pipeline, beyond a warm executor run: 30 us, as measured by
  // `ravnest-rt profile` on this project's machines (34-37 us) and seen in the traces (14-40 us per pass).
  double pass_overhead_s = 3e-5;
};

// The device's measured overheads where its profile has them, else the options'.
double kernel_overhead(const DeviceProfile& device, const CostModelOptions& options = {});
double program_overhead(const DeviceProfile& device, const CostModelOptions& options = {});
double pass_overhead(const DeviceProfile& device, const CostModelOptions& options = {});
// The fixed seconds of one pass (F, B or W) of a stage program beside its kernels:
// program_overhead + pass_overhead (the executor's run and the trainer's work around it).
double stage_pass_overhead(const DeviceProfile& device, const CostModelOptions& options = {});

struct PassTimes {
  double f = 0, b = 0, w = 0;
  double total() const { return f + b + w; }
};

// GFLOP/s of a forward convolution whose reduction (Cin / group * kh * kw) is `reduction`: the
// profile's conv_narrow_gflops at 9 (one input channel, 3x3), conv_gflops at 576 (64 channels)
// and above, geometric interpolation between; conv_gflops when the profile has no narrow figure.
double conv_forward_gflops(const DeviceProfile& device, double reduction);
// The same for a convolution's weight gradient (ConvGradWeight, whose reduction runs over the batch and the
// image, but whose speed falls with few input channels as the forward's does), from the profile's
// conv_narrow_grad_weight_gflops; conv_gflops when the profile has no such figure.
double conv_grad_weight_gflops(const DeviceProfile& device, double reduction);

// Seconds of `flops` + `bytes` of class `c` on `device` (0 when both are 0).
double kernel_seconds(double flops, double bytes, OpClass c, const DeviceProfile& device,
                      const CostModelOptions& options = {});
PassTimes op_times(const fe::OpCost& cost, OpClass c, const DeviceProfile& device, const CostModelOptions& options = {});
// Every node of `graph` (at its static shapes), in node order; nodes without a cost rule cost 0.
std::vector<PassTimes> graph_times(const Graph& graph, const DeviceProfile& device, const CostModelOptions& options = {});

// Seconds the runtime spends after a stage's weight-gradient program summing its
// outputs (the parameter gradients of one micro-batch) into the step's: 3x their bytes.
double gradient_accumulation_seconds(const Graph& weight_program, const DeviceProfile& device);

double transfer_seconds(double bytes, const LinkEstimate& link);

// What the cluster former needs of a whole model, per micro-batch.
struct ModelTotals {
  // A forward convolution's F and W FLOPs, kept apart from flops[kConv] because their rate depends on the
  // reduction (conv_forward_gflops, conv_grad_weight_gflops); its B FLOPs are in flops[kConv].
  struct Conv {
    double reduction = 0;
    double forward_flops = 0;
    double weight_flops = 0;
  };
  std::vector<Conv> convs;
  double flops[3] = {0, 0, 0};   // F+B+W FLOPs by OpClass, but for `convs`
  double bytes = 0;              // F+B+W memory traffic
  double kernels = 0;            // kernel launches of F+B+W
  double param_bytes = 0;        // trainable parameters
  double activation_bytes = 0;   // what F stashes for B and W (every node output)
  double boundary_bytes = 0;     // the largest activation a pipeline cut may cross
};
ModelTotals model_totals(const Graph& graph);
// Seconds of one micro-batch's F+B+W of the whole model on `device`.
double model_seconds(const ModelTotals& totals, const DeviceProfile& device, const CostModelOptions& options = {});

}  // namespace ravnest::part
