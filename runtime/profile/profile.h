// Machine profiling for `ravnest-rt profile`: the throughput of the runtime's own
// kernels, memory bandwidth and available memory, and links to named peers.
//
// Guarantees:
//  * time_kernel() builds the node's kernel through KernelRegistry::global() (the
//    same candidate the executor would pick), fills the inputs with deterministic
//    values, runs once to warm up, then runs until `budget` has passed (at least
//    `min_runs` times) and returns the median seconds of one run.
//  * measure_machine() spends about options.seconds in total (kernel and copy
//    budgets are fractions of it; every link probe has a deadline inside it), and
//    never blocks longer than options.seconds + 5 s. GEMM is a 512^3 fp32 Gemm
//    (dnnl_sgemm), conv a 3x3 64->64 channel Conv on 8x64x56x56 (oneDNN), the narrow conv and its weight
//    gradient a 3x3 1->32 channel Conv and ConvGradWeight on 8x1x28x28, memory
//    a copy of 64 MiB buffers by the kernels' threads (one with one OpenMP
//    thread, else one per core; read + write bytes counted); memory
//    available is /proc/meminfo's MemAvailable; executor overheads by
//    measure_executor_overheads, the trainer's per pass by measure_pass_overhead. With one OpenMP thread, kernel, executor,
//    pass and copy runs are timed in the thread's CPU time (other processes preempting the
//    profile do not inflate it), else in wall time.
//  * A link is measured with the runtime's link probe (runtime/collectives/
//    link_probe.h) against a peer running serve_profile_probes(): latency = half
//    the median round trip, bandwidth from a timed bulk transfer, in bytes/s.
//  * profile_json() writes exactly the profile format of docs/devices.md (bits
//    per second on links), which the compiler's loader (partitioner/devices.h)
//    accepts; tests/integration/profile_test.cc checks the two agree.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/graph.h"
#include "common/json.h"
#include "common/status.h"
#include "runtime/kernel.h"
#include "runtime/transport/transport.h"

namespace ravnest::rt {

struct KernelTiming {
  double seconds = 0;  // median of one run
  int64_t runs = 0;
  std::string impl;    // the chosen candidate ("onednn", ...)
};
Result<KernelTiming> time_kernel(const Node& node, const std::vector<ValueInfo>& inputs,
                                 const std::vector<ValueInfo>& outputs, std::chrono::milliseconds budget,
                                 int min_runs = 3, const RunContext& context = {});

struct MeasuredLink {
  std::string peer;  // host:port as given
  double bytes_per_s = 0;
  double latency_s = 0;
};

struct MachineMeasurement {
  int64_t cores = 0;
  double gemm_gflops = 0;
  double conv_gflops = 0;
  double conv_narrow_gflops = 0;  // a 3x3 convolution with one input channel (docs/devices.md)
  double conv_narrow_grad_weight_gflops = 0;  // the weight gradient of that convolution (docs/devices.md)
  double memory_bandwidth_gbps = 0;
  int64_t memory_available_bytes = 0;
  double kernel_overhead_s = 0;   // executor run per kernel, beyond the kernel's work
  double program_overhead_s = 0;  // executor run per program, beyond its kernels
  double pass_overhead_s = 0;     // trainer per pass (F, B or W), beyond its executor run
  std::vector<MeasuredLink> links;
};

struct MeasureOptions {
  double seconds = 10;             // total budget, > 0
  std::vector<std::string> peers;  // host:port of peers running `ravnest-rt profile --serve`
};

double measure_gemm_gflops(std::chrono::milliseconds budget, Status* status);
// GFLOP/s of a 3x3 convolution with `in_channels` input channels: 64 (conv_gflops, 8x64x56x56 to 64
// channels) or 1 (conv_narrow_gflops, 8x1x28x28 to 32 channels, an image model's first layer).
double measure_conv_gflops(std::chrono::milliseconds budget, Status* status, int64_t in_channels = 64);
// GFLOP/s of the weight gradient (ConvGradWeight, with the bias gradient) of the one-input-channel convolution
// of measure_conv_gflops(.., 1): 8x32x28x28 output gradient and 8x1x28x28 input to 32x1x3x3 and 32 (the cost
// rule's FLOPs: 2 x MACs + one add per output-gradient element, over the median run, memory time included).
double measure_conv_narrow_grad_weight_gflops(std::chrono::milliseconds budget, Status* status);
// The executor's fixed costs: programs of 1 and of 9 chained Relu nodes on one
// float, run through Executor (feeds, outputs, kernel dispatch) for `budget`; per
// kernel = the difference / 8, per program = the 1-node run less one kernel.
Status measure_executor_overheads(std::chrono::milliseconds budget, double* kernel_s, double* program_s);
// What a trainer pass (F, B or W) in a pipeline costs beyond a warm executor run of its program: the trainer's
// map work (feeds gathered from the micro-batch's received tensors, stash and the parameters; the stash and
// outputs kept; the maps released), mirrored from TrainerImpl::run_instr, and starting with cold caches, as a
// pass does after the receives, sends and other processes that run between two passes of a stage (before each
// pass `evict_bytes` are written, outside its time). The stage is one 16x128 -> 10 fully connected layer
// (F: Gemm; B: Gemm; W: Gemm and ReduceSum). Over about `budget`, in slices that alternate the trainer's passes
// with back-to-back executor runs of the same programs (warm); the medians per pass.
struct PassOverhead {
  double pass_s = 0;      // one pass as the trainer runs it, caches cold
  double executor_s = 0;  // the executor's run of the same program alone, caches warm
  // The difference, at least 1e-7 s (a profile field of 0 means "not measured").
  double overhead_s() const { return std::max(1e-7, pass_s - executor_s); }
};
// The profile's eviction between passes: 32 MiB, the L3 of a core complex of this project's machines (and more
// than the L2 + L3 share of one core of common desktop CPUs). Measured here: 0.4 us of overhead with no
// eviction, 3.3 us with 4 MiB, 16-20 us with 16 MiB, 34-37 us with 32 MiB, beside 14-40 us per pass seen
// in the traces of 3-stage runs on this 2-core machine (docs/devices.md).
inline constexpr size_t kPassEvictBytes = size_t{32} << 20;
Result<PassOverhead> measure_pass_overhead(std::chrono::milliseconds budget, size_t evict_bytes);
// Copy bandwidth with `threads` threads, GB/s (1e9 bytes/s), read + write; one thread copies in the calling
// thread, timed like the kernels (its CPU time when OpenMP has one thread).
double measure_memory_bandwidth_gbps(int threads, std::chrono::milliseconds budget);
// MemAvailable of /proc/meminfo in bytes; an error where it cannot be read.
Result<int64_t> memory_available_bytes();

// The node id a profile server answers with.
inline constexpr const char* kProfileServerId = "profile-server";
// Probes the link to a profile server at host:port, within `deadline`.
Result<MeasuredLink> probe_profile_peer(const std::string& host_port, Deadline deadline);
// Answers probes on host:port until `stop` becomes true (checked every 100 ms) or
// `max_clients` clients were served (0: no limit). `port` 0 picks a free port,
// reported through `bound_port` (if not null) once listening.
Status serve_profile_probes(const std::string& host, uint16_t port, const std::atomic<bool>& stop, int max_clients,
                            std::atomic<int>* bound_port);

Result<MachineMeasurement> measure_machine(const MeasureOptions& options);

// The device profile (docs/devices.md) of this machine.
Json profile_json(const MachineMeasurement& m, const std::string& id, const std::string& address);

}  // namespace ravnest::rt
