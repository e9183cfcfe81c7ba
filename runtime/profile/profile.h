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
//    (dnnl_sgemm), conv a 3x3 64->64 channel Conv on 8x64x56x56 (oneDNN), memory
//    a multi-threaded copy of 64 MiB buffers (read + write bytes counted); memory
//    available is /proc/meminfo's MemAvailable; executor overheads by
//    measure_executor_overheads. With one OpenMP thread, kernel and executor
//    runs are timed in the thread's CPU time (other processes preempting the
//    profile do not inflate it), else in wall time.
//  * A link is measured with the runtime's link probe (runtime/collectives/
//    link_probe.h) against a peer running serve_profile_probes(): latency = half
//    the median round trip, bandwidth from a timed bulk transfer, in bytes/s.
//  * profile_json() writes exactly the profile format of docs/devices.md (bits
//    per second on links), which the compiler's loader (partitioner/devices.h)
//    accepts; tests/integration/profile_test.cc checks the two agree.
#pragma once

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
  double memory_bandwidth_gbps = 0;
  int64_t memory_available_bytes = 0;
  double kernel_overhead_s = 0;   // executor run per kernel, beyond the kernel's work
  double program_overhead_s = 0;  // executor run per program, beyond its kernels
  std::vector<MeasuredLink> links;
};

struct MeasureOptions {
  double seconds = 10;             // total budget, > 0
  std::vector<std::string> peers;  // host:port of peers running `ravnest-rt profile --serve`
};

double measure_gemm_gflops(std::chrono::milliseconds budget, Status* status);
double measure_conv_gflops(std::chrono::milliseconds budget, Status* status);
// The executor's fixed costs: programs of 1 and of 9 chained Relu nodes on one
// float, run through Executor (feeds, outputs, kernel dispatch) for `budget`; per
// kernel = the difference / 8, per program = the 1-node run less one kernel.
Status measure_executor_overheads(std::chrono::milliseconds budget, double* kernel_s, double* program_s);
// Copy bandwidth with `threads` threads, GB/s (1e9 bytes/s), read + write.
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
