// Machine profiling: kernels through the registry, a copy loop, a stage's passes
// driven as the trainer drives them, /proc/meminfo and the link probe (see profile.h).
#include "runtime/profile/profile.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "runtime/collectives/link_probe.h"
#include "runtime/executor.h"
#include "runtime/trace.h"
#include "runtime/transport/transport.h"

namespace ravnest::rt {
namespace {

using Millis = std::chrono::milliseconds;

constexpr const char* kProfileRunId = "ravnest-profile";

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Millis fraction(double seconds, double f) {
  return Millis(static_cast<int64_t>(seconds * f * 1000));
}

// "host:port" -> (host, port); an error naming the text otherwise.
Result<std::pair<std::string, uint16_t>> split_host_port(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    return error(Code::kInvalidArgument, "peer '", text, "' is not HOST:PORT");
  const std::string port_text = text.substr(colon + 1);
  int64_t port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9' || port > 65535) return error(Code::kInvalidArgument, "peer '", text, "': bad port");
    port = port * 10 + (c - '0');
  }
  if (port < 1 || port > 65535) return error(Code::kInvalidArgument, "peer '", text, "': port must be 1..65535");
  return std::make_pair(text.substr(0, colon), static_cast<uint16_t>(port));
}

// The clock the profile times runs with: the thread's CPU time with one OpenMP thread, else wall time.
class RunClock {
 public:
  RunClock() : one_thread_(omp_get_max_threads() == 1) {}
  double now_s() const {
    return one_thread_ ? static_cast<double>(TraceRecorder::thread_cpu_ns()) * 1e-9
                       : std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  }

 private:
  bool one_thread_;
};

double median_of(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

// Calls `once` (which returns the seconds of a sample, or an error) at least `min_runs` times and until `budget`
// has passed (at most 100000 times); the median sample and the runs.
template <typename Fn>
Result<std::pair<double, int64_t>> median_samples(Millis budget, int min_runs, Fn&& once) {
  std::vector<double> samples;
  const Clock::time_point start = Clock::now();
  const double budget_s = std::chrono::duration<double>(budget).count();
  while (static_cast<int>(samples.size()) < min_runs || seconds_since(start) < budget_s) {
    RN_ASSIGN_OR_RETURN(double sample, once());
    samples.push_back(sample);
    if (samples.size() >= 100000) break;
  }
  const int64_t runs = static_cast<int64_t>(samples.size());
  return std::make_pair(median_of(std::move(samples)), runs);
}

// Runs `once` at least `min_runs` times and until `budget` has passed (at most 100000
// times) and returns the median seconds of one run and the runs. One OpenMP thread:
// the thread's CPU time, which other processes preempting it do not inflate (the
// runtime's traces report compute the same way, args.cpu_us). Several: wall time.
template <typename Fn>
Result<std::pair<double, int64_t>> median_seconds(Millis budget, int min_runs, Fn&& once) {
  const RunClock clock;
  return median_samples(budget, min_runs, [&]() -> Result<double> {
    const double t0 = clock.now_s();
    RN_RETURN_IF_ERROR(once());
    return clock.now_s() - t0;
  });
}

Node make_node(const std::string& op, const std::string& name, std::vector<std::string> inputs) {
  Node n;
  n.op = op;
  n.name = name;
  n.inputs = std::move(inputs);
  n.outputs = {"y"};
  return n;
}

}  // namespace

Result<KernelTiming> time_kernel(const Node& node, const std::vector<ValueInfo>& inputs,
                                 const std::vector<ValueInfo>& outputs, Millis budget, int min_runs,
                                 const RunContext& context) {
  KernelRequest request;
  request.node = &node;
  request.inputs = inputs;
  request.outputs = outputs;
  KernelTiming timing;
  RN_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel, KernelRegistry::global().build(request, &timing.impl));
  std::vector<Tensor> in_tensors, out_tensors;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].dtype == DType::kUndefined) {
      in_tensors.emplace_back();
      continue;
    }
    Tensor t = Tensor::zeros(inputs[i].dtype, inputs[i].static_shape());
    if (t.dtype() == DType::kF32) {
      float* p = t.data<float>();
      for (int64_t k = 0; k < t.numel(); ++k) p[k] = 0.01f * static_cast<float>((k * 7 + static_cast<int64_t>(i)) % 13 - 6);
    }
    in_tensors.push_back(std::move(t));
  }
  for (const ValueInfo& v : outputs)
    out_tensors.push_back(v.dtype == DType::kUndefined ? Tensor() : Tensor::zeros(v.dtype, v.static_shape()));
  std::vector<Tensor*> in_ptrs, out_ptrs;
  for (size_t i = 0; i < in_tensors.size(); ++i)
    in_ptrs.push_back(inputs[i].dtype == DType::kUndefined ? nullptr : &in_tensors[i]);
  for (size_t i = 0; i < out_tensors.size(); ++i)
    out_ptrs.push_back(outputs[i].dtype == DType::kUndefined ? nullptr : &out_tensors[i]);

  RN_RETURN_IF_ERROR(kernel->run(in_ptrs, out_ptrs, context));  // warm-up: first-touch, primitive caches
  RN_ASSIGN_OR_RETURN(auto median,
                      median_seconds(budget, min_runs, [&] { return kernel->run(in_ptrs, out_ptrs, context); }));
  timing.seconds = median.first;
  timing.runs = median.second;
  return timing;
}

namespace {

// Median seconds of one run of `program` (one float in, one out) over `budget`.
Result<double> time_program(const Graph& program, Millis budget) {
  RN_ASSIGN_OR_RETURN(std::unique_ptr<Executor> exec, Executor::create(program, KernelRegistry::global()));
  TensorMap feeds{{"x", Tensor::zeros(DType::kF32, {1})}};
  auto once = [&] {
    TensorMap out;
    return exec->run(feeds, &out);
  };
  for (int warm = 0; warm < 3; ++warm) RN_RETURN_IF_ERROR(once());
  RN_ASSIGN_OR_RETURN(auto median, median_seconds(budget, 20, once));
  return median.first;
}

Graph relu_chain(int nodes) {
  Graph g;
  g.name = "profile_relu_chain";
  g.opset = 17;
  g.inputs = {"x"};
  g.set_value(ValueInfo::of("x", DType::kF32, {1}));
  std::string prev = "x";
  for (int i = 0; i < nodes; ++i) {
    const std::string out = "r" + std::to_string(i);
    Node n = make_node("Relu", out, {prev});
    n.outputs = {out};
    g.nodes.push_back(n);
    g.set_value(ValueInfo::of(out, DType::kF32, {1}));
    prev = out;
  }
  g.outputs = {prev};
  return g;
}

// A stage of one fully connected layer, y = x w^T + b with x [16, 128] and y [16, 10] (the CNN's last layer at a
// micro-batch of 16), as autodiff splits it: F computes y, B the input gradient, W the weight and bias gradients.
// The programs read what the trainer feeds them: parameters, F's stash (x) and the received gradient (seed/y).
struct TinyStage {
  Graph forward, backward, weight;
  std::vector<std::string> stash = {"x"};         // F's stash for B and W (a forward input, as the trainer allows)
  std::vector<std::string> wstash = {"seed/y"};   // B's stash for W (the received gradient)
  std::vector<std::string> params = {"w", "b"};
};

Graph tiny_program(const std::string& name, std::vector<std::string> inputs, std::vector<Node> nodes,
                   const std::vector<ValueInfo>& values) {
  Graph g;
  g.name = name;
  g.opset = 17;
  g.inputs = std::move(inputs);
  for (const ValueInfo& v : values) g.set_value(v);
  for (const Node& n : nodes)
    for (const std::string& out : n.outputs) g.outputs.push_back(out);
  g.nodes = std::move(nodes);
  return g;
}

TinyStage tiny_stage() {
  constexpr int64_t kRows = 16, kIn = 128, kOut = 10;
  const std::vector<ValueInfo> values = {
      ValueInfo::of("x", DType::kF32, {kRows, kIn}),         ValueInfo::of("w", DType::kF32, {kOut, kIn}),
      ValueInfo::of("b", DType::kF32, {kOut}),               ValueInfo::of("y", DType::kF32, {kRows, kOut}),
      ValueInfo::of("seed/y", DType::kF32, {kRows, kOut}),   ValueInfo::of("grad/x", DType::kF32, {kRows, kIn}),
      ValueInfo::of("grad/w", DType::kF32, {kOut, kIn}),     ValueInfo::of("grad/b", DType::kF32, {kOut}),
      ValueInfo::of("axes", DType::kI64, {1})};
  TinyStage s;
  Node f = make_node("Gemm", "fc", {"x", "w", "b"});
  f.attrs["transB"] = int64_t{1};
  s.forward = tiny_program("profile_stage.forward", {"x", "w", "b"}, {f}, values);
  Node dx = make_node("Gemm", "fc/grad_a", {"seed/y", "w"});
  dx.outputs = {"grad/x"};
  s.backward = tiny_program("profile_stage.backward", {"seed/y", "w"}, {dx}, values);
  Node dw = make_node("Gemm", "fc/grad_b", {"seed/y", "x"});
  dw.attrs["transA"] = int64_t{1};
  dw.outputs = {"grad/w"};
  Node db = make_node("ReduceSum", "fc/grad_c", {"seed/y", "axes"});
  db.attrs["keepdims"] = int64_t{0};
  db.outputs = {"grad/b"};
  s.weight = tiny_program("profile_stage.weight", {"x", "seed/y"}, {dw, db}, values);
  s.weight.initializers["axes"] = TensorData::from_ints({0}, {1});
  return s;
}

Tensor filled(const Graph& g, const std::string& name) {
  Tensor t = Tensor::zeros(DType::kF32, g.find_value(name)->static_shape());
  float* p = t.data<float>();
  for (int64_t k = 0; k < t.numel(); ++k) p[k] = 0.01f * static_cast<float>(k % 13 - 6);
  return t;
}

}  // namespace

Result<PassOverhead> measure_pass_overhead(Millis budget, size_t evict_bytes) {
  const TinyStage stage = tiny_stage();
  // What runs between two passes of a stage (receives, sends, the other stages' processes) leaves the caches cold:
  // writing `evict_bytes` before each pass, outside its time, does the same.
  std::vector<char> other_work(evict_bytes, 0);
  auto between_passes = [&] {
    for (size_t i = 0; i < other_work.size(); i += 64) ++other_work[i];
  };
  RN_ASSIGN_OR_RETURN(std::unique_ptr<Executor> fwd, Executor::create(stage.forward, KernelRegistry::global()));
  RN_ASSIGN_OR_RETURN(std::unique_ptr<Executor> bwd, Executor::create(stage.backward, KernelRegistry::global()));
  RN_ASSIGN_OR_RETURN(std::unique_ptr<Executor> wgt, Executor::create(stage.weight, KernelRegistry::global()));
  TensorMap params;
  for (const std::string& p : stage.params) params[p] = filled(stage.forward, p);
  const Tensor x = filled(stage.forward, "x"), dy = filled(stage.forward, "seed/y");
  const RunClock clock;

  // One micro-batch through F, B and W as TrainerImpl::run_instr drives them (the receives, which the trainer
  // times as communication, and the summing of the parameter gradients, which the cost model counts by bytes, are
  // left out of the time): seconds of the three passes.
  struct Micro {
    TensorMap acts_in, stash, grads_recv, wstash, outputs;
  };
  auto trainer_passes = [&]() -> Result<double> {
    Micro u;
    u.acts_in["x"] = x;  // RECV_ACT
    between_passes();
    double t0 = clock.now_s();
    {
      TensorMap data;
      RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(stage.forward, {&data, &u.acts_in, &params}));
      TensorMap out;
      RN_RETURN_IF_ERROR(fwd->run(feeds, &out));
      for (const std::string& name : stage.stash) {
        auto it = out.find(name);
        u.stash[name] = it != out.end() ? it->second : feeds.at(name);
      }
      u.outputs = std::move(out);
      u.acts_in.clear();
    }
    double seconds = clock.now_s() - t0;
    u.outputs.clear();            // SEND_ACT
    u.grads_recv["seed/y"] = dy;  // RECV_GRAD
    between_passes();
    t0 = clock.now_s();
    {
      TensorMap seed;
      RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(stage.backward, {&u.stash, &u.grads_recv, &seed, &params}));
      TensorMap out;
      RN_RETURN_IF_ERROR(bwd->run(feeds, &out));
      for (const std::string& name : stage.wstash) {
        auto it = out.find(name);
        u.wstash[name] = it != out.end() ? it->second : u.grads_recv.at(name);
      }
      u.outputs = std::move(out);
      u.grads_recv.clear();
    }
    seconds += clock.now_s() - t0;
    between_passes();
    t0 = clock.now_s();
    {
      RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(stage.weight, {&u.stash, &u.wstash, &params}));
      TensorMap out;
      RN_RETURN_IF_ERROR(wgt->run(feeds, &out));
      u.stash.clear();
      u.wstash.clear();
    }
    return seconds + clock.now_s() - t0;
  };
  // The same three programs run bare, on feeds built once.
  const TensorMap fwd_feeds{{"x", x}, {"w", params.at("w")}, {"b", params.at("b")}};
  const TensorMap bwd_feeds{{"seed/y", dy}, {"w", params.at("w")}};
  const TensorMap wgt_feeds{{"x", x}, {"seed/y", dy}};
  auto executor_runs = [&]() -> Result<double> {
    double seconds = 0;
    for (auto [exec, feeds] : {std::make_pair(fwd.get(), &fwd_feeds), std::make_pair(bwd.get(), &bwd_feeds),
                               std::make_pair(wgt.get(), &wgt_feeds)}) {
      TensorMap out;
      const double t0 = clock.now_s();
      RN_RETURN_IF_ERROR(exec->run(*feeds, &out));
      seconds += clock.now_s() - t0;
    }
    return seconds;
  };
  for (int warm = 0; warm < 3; ++warm) {
    RN_RETURN_IF_ERROR(trainer_passes().status());
    RN_RETURN_IF_ERROR(executor_runs().status());
  }
  // Alternate the two in slices so that a change of load on the machine hits both alike.
  std::vector<double> passes, bare;
  constexpr int kSlices = 5;
  const Millis slice = std::max(Millis(1), budget / (2 * kSlices));
  for (int i = 0; i < kSlices; ++i) {
    RN_ASSIGN_OR_RETURN(auto p, median_samples(slice, 3, trainer_passes));
    RN_ASSIGN_OR_RETURN(auto e, median_samples(slice, 3, executor_runs));
    passes.push_back(p.first / 3);
    bare.push_back(e.first / 3);
  }
  PassOverhead result;
  result.pass_s = median_of(passes);
  result.executor_s = median_of(bare);
  return result;
}

Status measure_executor_overheads(Millis budget, double* kernel_s, double* program_s) {
  RN_ASSIGN_OR_RETURN(double one, time_program(relu_chain(1), budget / 2));
  RN_ASSIGN_OR_RETURN(double nine, time_program(relu_chain(9), budget / 2));
  *kernel_s = std::max(1e-7, (nine - one) / 8);
  *program_s = std::max(1e-7, one - *kernel_s);
  return ok_status();
}

double measure_gemm_gflops(Millis budget, Status* status) {
  constexpr int64_t kN = 512;
  Node n = make_node("Gemm", "profile_gemm", {"a", "b"});
  auto timing = time_kernel(n, {ValueInfo::of("a", DType::kF32, {kN, kN}), ValueInfo::of("b", DType::kF32, {kN, kN})},
                            {ValueInfo::of("y", DType::kF32, {kN, kN})}, budget);
  if (!timing.ok()) {
    *status = timing.status().with_context("timing the GEMM kernel");
    return 0;
  }
  return 2.0 * kN * kN * kN / timing->seconds / 1e9;
}

double measure_conv_gflops(Millis budget, Status* status, int64_t in_channels) {
  constexpr int64_t kBatch = 8;
  const int64_t cin = in_channels, cout = in_channels == 64 ? 64 : 32, hw = in_channels == 64 ? 56 : 28;
  Node n = make_node("Conv", "profile_conv", {"x", "w"});
  n.attrs["kernel_shape"] = std::vector<int64_t>{3, 3};
  n.attrs["pads"] = std::vector<int64_t>{1, 1, 1, 1};
  auto timing = time_kernel(n,
                            {ValueInfo::of("x", DType::kF32, {kBatch, cin, hw, hw}),
                             ValueInfo::of("w", DType::kF32, {cout, cin, 3, 3})},
                            {ValueInfo::of("y", DType::kF32, {kBatch, cout, hw, hw})}, budget);
  if (!timing.ok()) {
    *status = timing.status().with_context("timing the Conv kernel");
    return 0;
  }
  const double macs = static_cast<double>(kBatch) * cout * hw * hw * cin * 9;
  return 2 * macs / timing->seconds / 1e9;
}

double measure_conv_narrow_grad_weight_gflops(Millis budget, Status* status) {
  constexpr int64_t kBatch = 8, kOut = 32, kHw = 28;
  Node n = make_node("ConvGradWeight", "profile_conv_grad_weight", {"dy", "x"});
  n.domain = kRavnestDomain;
  n.outputs = {"dw", "db"};
  n.attrs["kernel_shape"] = std::vector<int64_t>{3, 3};
  n.attrs["pads"] = std::vector<int64_t>{1, 1, 1, 1};
  auto timing = time_kernel(n,
                            {ValueInfo::of("dy", DType::kF32, {kBatch, kOut, kHw, kHw}),
                             ValueInfo::of("x", DType::kF32, {kBatch, 1, kHw, kHw})},
                            {ValueInfo::of("dw", DType::kF32, {kOut, 1, 3, 3}),
                             ValueInfo::of("db", DType::kF32, {kOut})},
                            budget);
  if (!timing.ok()) {
    *status = timing.status().with_context("timing the ConvGradWeight kernel");
    return 0;
  }
  const double outputs = static_cast<double>(kBatch) * kOut * kHw * kHw;
  return (2 * outputs * 9 + outputs) / timing->seconds / 1e9;
}

double measure_memory_bandwidth_gbps(int threads, Millis budget) {
  constexpr size_t kBytes = size_t{64} << 20;  // per buffer: well beyond any last-level cache share
  threads = std::max(1, threads);
  const size_t chunk = kBytes / static_cast<size_t>(threads);
  std::vector<char> src(kBytes, 1), dst(kBytes, 0);
  auto copy_all = [&]() {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t]() {
        std::memcpy(dst.data() + chunk * static_cast<size_t>(t), src.data() + chunk * static_cast<size_t>(t), chunk);
      });
    for (std::thread& th : pool) th.join();
  };
  copy_all();  // warm-up: first touch of dst
  std::vector<double> rates;
  const Clock::time_point start = Clock::now();
  const double budget_s = std::chrono::duration<double>(budget).count();
  // One thread copies in the calling thread, timed like the kernels (CPU time with one OpenMP thread).
  const RunClock clock;
  while (rates.size() < 3 || seconds_since(start) < budget_s) {
    const Clock::time_point t0 = Clock::now();
    const double c0 = clock.now_s();
    if (threads == 1) {
      std::memcpy(dst.data(), src.data(), kBytes);
    } else {
      copy_all();
    }
    const double seconds = threads == 1 ? clock.now_s() - c0 : seconds_since(t0);
    rates.push_back(2.0 * static_cast<double>(chunk * static_cast<size_t>(threads)) / seconds / 1e9);
    if (rates.size() >= 1000) break;
  }
  return median_of(std::move(rates));
}

Result<int64_t> memory_available_bytes() {
  std::ifstream in("/proc/meminfo");
  if (!in) return error(Code::kNotFound, "cannot read /proc/meminfo; give memory_bytes in the profile by hand");
  std::string key;
  int64_t value = 0;
  std::string unit;
  while (in >> key >> value) {
    std::getline(in, unit);
    if (key == "MemAvailable:") {
      if (value <= 0 || value > (int64_t{1} << 50)) break;
      return value * 1024;  // kB
    }
  }
  return error(Code::kNotFound, "/proc/meminfo has no usable MemAvailable line; give memory_bytes in the profile by hand");
}

Result<MeasuredLink> probe_profile_peer(const std::string& host_port, Deadline deadline) {
  RN_ASSIGN_OR_RETURN(auto hp, split_host_port(host_port));
  TransportOptions topt;
  topt.node_id = "profile-client-" + std::to_string(::getpid()) + "-" +
                 std::to_string(Clock::now().time_since_epoch().count());
  topt.run_id = kProfileRunId;
  Transport transport(topt);
  Status st = transport.connect(kProfileServerId, hp.first, hp.second, deadline);
  if (!st.ok()) return st.with_context("profiling the link to " + host_port);
  ProbeOptions popt;
  popt.pings = 9;
  popt.transfer_budget = Millis(300);
  popt.bulk_bytes = uint64_t{64} << 20;
  auto matrix = probe_links(transport, {topt.node_id, kProfileServerId}, 0, popt, deadline);
  if (!matrix.ok()) return matrix.status().with_context("profiling the link to " + host_port);
  return MeasuredLink{host_port, matrix->bandwidth(0, 1), matrix->latency(0, 1)};
}

Status serve_profile_probes(const std::string& host, uint16_t port, const std::atomic<bool>& stop, int max_clients,
                            std::atomic<int>* bound_port) {
  TransportOptions topt;
  topt.node_id = kProfileServerId;
  topt.run_id = kProfileRunId;
  Transport transport(topt);
  RN_RETURN_IF_ERROR(transport.listen(host, port));
  if (bound_port) bound_port->store(transport.port());
  std::set<std::string> served;
  int clients = 0;
  while (!stop.load() && (max_clients <= 0 || clients < max_clients)) {
    std::string client;
    for (const std::string& p : transport.connected_peers())
      if (!served.count(p)) client = p;
    if (client.empty()) {
      std::this_thread::sleep_for(Millis(100));
      continue;
    }
    served.insert(client);
    ++clients;
    // A client that goes away mid-probe costs its own deadline, not the server.
    ProbeOptions popt;
    popt.pings = 9;
    popt.transfer_budget = Millis(300);
    popt.bulk_bytes = uint64_t{64} << 20;
    auto matrix = probe_links(transport, {client, kProfileServerId}, 1, popt, deadline_after(Millis(20000)));
    if (!matrix.ok()) std::fprintf(stderr, "ravnest-rt profile --serve: %s\n", matrix.status().message().c_str());
  }
  return ok_status();
}

Result<MachineMeasurement> measure_machine(const MeasureOptions& options) {
  if (!(options.seconds > 0)) return error(Code::kInvalidArgument, "--seconds must be positive");
  MachineMeasurement m;
  m.cores = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  // Kernels and memory take 70% of the budget; links share the rest.
  const double kernel_share = options.peers.empty() ? 0.9 : 0.7;
  Status st;
  m.gemm_gflops = measure_gemm_gflops(fraction(options.seconds, kernel_share * 0.3), &st);
  RN_RETURN_IF_ERROR(st);
  m.conv_gflops = measure_conv_gflops(fraction(options.seconds, kernel_share * 0.2), &st);
  RN_RETURN_IF_ERROR(st);
  m.conv_narrow_gflops = measure_conv_gflops(fraction(options.seconds, kernel_share * 0.05), &st, 1);
  RN_RETURN_IF_ERROR(st);
  m.conv_narrow_grad_weight_gflops =
      measure_conv_narrow_grad_weight_gflops(fraction(options.seconds, kernel_share * 0.05), &st);
  RN_RETURN_IF_ERROR(st);
  // The kernels' threads copy: with one OpenMP thread (one stage per core) that thread alone, else one per core.
  const int copy_threads = omp_get_max_threads() == 1 ? 1 : static_cast<int>(m.cores);
  m.memory_bandwidth_gbps = measure_memory_bandwidth_gbps(copy_threads, fraction(options.seconds, kernel_share * 0.2));
  RN_RETURN_IF_ERROR(measure_executor_overheads(fraction(options.seconds, kernel_share * 0.05), &m.kernel_overhead_s,
                                                &m.program_overhead_s));
  RN_ASSIGN_OR_RETURN(PassOverhead pass,
                      measure_pass_overhead(fraction(options.seconds, kernel_share * 0.15), kPassEvictBytes));
  m.pass_overhead_s = pass.overhead_s();
  RN_ASSIGN_OR_RETURN(m.memory_available_bytes, memory_available_bytes());
  if (!options.peers.empty()) {
    const double per_peer = options.seconds * (1 - kernel_share) / static_cast<double>(options.peers.size());
    for (const std::string& peer : options.peers) {
      // At least 2 s per peer: a connection plus a probe cannot be shorter.
      RN_ASSIGN_OR_RETURN(MeasuredLink link,
                          probe_profile_peer(peer, deadline_after(Millis(static_cast<int64_t>(std::max(2.0, per_peer) * 1000)))));
      m.links.push_back(std::move(link));
    }
  }
  return m;
}

Json profile_json(const MachineMeasurement& m, const std::string& id, const std::string& address) {
  Json j = Json::object();
  j.set("id", id);
  j.set("address", address);
  j.set("kind", "cpu");
  j.set("cores", m.cores);
  j.set("gemm_gflops", m.gemm_gflops);
  j.set("conv_gflops", m.conv_gflops);
  j.set("conv_narrow_gflops", m.conv_narrow_gflops);
  j.set("conv_narrow_grad_weight_gflops", m.conv_narrow_grad_weight_gflops);
  j.set("memory_bandwidth_gbps", m.memory_bandwidth_gbps);
  j.set("memory_bytes", m.memory_available_bytes);
  j.set("kernel_overhead_s", m.kernel_overhead_s);
  j.set("program_overhead_s", m.program_overhead_s);
  j.set("pass_overhead_s", m.pass_overhead_s);
  Json links = Json::array();
  for (const MeasuredLink& l : m.links) {
    Json e = Json::object();
    e.set("peer", l.peer);
    e.set("bandwidth_bps", l.bytes_per_s * 8);
    e.set("latency_s", l.latency_s);
    links.push_back(std::move(e));
  }
  j.set("links", std::move(links));
  return j;
}

}  // namespace ravnest::rt
