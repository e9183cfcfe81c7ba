// Partitioner benchmark (issue 4): how long the compiler's partitioning takes and how
// balanced its stages are against two simple splits.
//
//   ravnest-partition-bench [--models a.onnx,b.onnx,...] [--batch 2] [--nodes 100000] [--seed 1]
//                           [--skip-synthetic] [--skip-models]
//
// 1. Per model: wall and CPU seconds of each phase the compiler runs with a devices file
//    (codegen/compile.cc): ONNX read, the rest of the import (shape inference, folding, our
//    shape rules), per-device node costs + cluster formation, and per cluster: the weighted
//    DAG, the machine order, block detection, the split (partition_by_blocks or
//    partition_dag), order_by_stage and build_stage_programs. `ravnestc compile` runs the
//    split and the stage programs once per calibration round (4 rounds).
// 2. Balance: per model and machine set, the bottleneck (slowest stage: compute / speed +
//    transfers over its two links, dag_partition.h's cost model) of the compiler's split,
//    of a uniform split (equal op counts per stage along a topological order) and of a
//    parameter split (equal parameter bytes per stage along the same order, as the original
//    Ravnest splits), all on the same machine order and evaluated by evaluate_partition.
//    Lower is better; the ratios are baseline / compiler. A baseline that overflows a
//    machine's memory is evaluated without the memory limits and marked '*'.
// 3. A synthetic Inception-like DAG (--nodes, default 100,000): modules of 2-4 branches of
//    1-3 conv-like nodes between a fan-out and a fan-in (concat), residual edges around
//    some modules and a few longer skips; per node FLOPs, parameter and tensor bytes of a
//    convolution whose resolution falls and channel count rises along the network. Timed
//    per phase for 4 and 8 machines (speeds cycling 1, 2, 4; 1 Gbit/s and 300 Mbit/s
//    links), with and without memory limits.
//
// Machine sets for the models, each one pipeline of all its machines (as `ravnestc compile
// --clusters 1 --stages N`): three_laptops.json (speeds ~1:2:4, 300 Mbit/s links), the same
// machines with free links (compute balance only), and mixed_8.json (4 desks ~10x the 4
// laptops; links via the tracker). Speeds and node costs are derived as
// compile.cc does: node seconds on the first machine, speed = whole model on the first
// machine over the whole model on each. Not a test: nothing is asserted.
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "codegen/stages.h"
#include "common/onnx_graph.h"
#include "frontend/import.h"
#include "frontend/passes.h"
#include "partitioner/blocks.h"
#include "partitioner/clusters.h"
#include "partitioner/cost_model.h"
#include "partitioner/dag_partition.h"
#include "partitioner/devices.h"
#include "partitioner/memory_model.h"

namespace {

using namespace ravnest;

// ---- timing ----

double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Lap {
  double wall = 0, cpu = 0;
};

// Wall and process CPU seconds since construction or the last lap().
class Stopwatch {
 public:
  Stopwatch() { reset(); }
  void reset() {
    wall_ = std::chrono::steady_clock::now();
    cpu_ = cpu_now();
  }
  Lap lap() {
    const auto wall = std::chrono::steady_clock::now();
    const double cpu = cpu_now();
    Lap l{std::chrono::duration<double>(wall - wall_).count(), cpu - cpu_};
    wall_ = wall;
    cpu_ = cpu;
    return l;
  }

 private:
  std::chrono::steady_clock::time_point wall_;
  double cpu_ = 0;
};

void print_lap(const std::string& what, const Lap& l) {
  std::printf("  %-44s wall %8.3f s  cpu %8.3f s\n", what.c_str(), l.wall, l.cpu);
}

// ---- splits ----

// Stages along `order` (a topological order) with each stage holding an equal share of
// `weight` (a node goes to the stage its weight's midpoint falls in), adjusted so that the
// stages are non-decreasing along the order (acyclic), no stage is skipped and each holds
// a node. All weights 0 (or empty): an equal count of nodes.
std::vector<int> split_by_weight(const std::vector<int>& order, std::vector<double> weight, int k) {
  const size_t n = order.size();
  double total = 0;
  for (int v : order) total += weight.empty() ? 0 : weight[static_cast<size_t>(v)];
  if (total <= 0) {
    weight.assign(n, 1.0);
    total = static_cast<double>(n);
  }
  std::vector<int> stage(n, 0);
  double before = 0;
  int prev = 0;
  for (size_t j = 0; j < n; ++j) {
    const double w = weight[static_cast<size_t>(order[j])];
    int s = static_cast<int>(std::floor((before + w / 2) / total * k));
    before += w;
    const int lo = std::max(j == 0 ? 0 : prev, k - static_cast<int>(n - j));
    const int hi = j == 0 ? 0 : std::min(prev + 1, k - 1);
    s = std::clamp(s, lo, std::max(lo, hi));
    stage[static_cast<size_t>(order[j])] = s;
    prev = s;
  }
  return stage;
}

// The bottleneck of `stage_of_node`; a split that overflows memory is evaluated without the
// limits and flagged.
struct Evaluated {
  double bottleneck = 0;
  bool over_memory = false;
};
Result<Evaluated> evaluate(const part::WeightedDag& dag, const part::Pipeline& pipeline,
                           std::vector<int> stage_of_node) {
  auto e = part::evaluate_partition(dag, pipeline, stage_of_node);
  if (e.ok()) return Evaluated{e->bottleneck, false};
  if (e.status().code() != Code::kResourceExhausted) return e.status();
  part::Pipeline unlimited = pipeline;
  for (auto& m : unlimited.machines) m.memory_bytes = 0;
  RN_ASSIGN_OR_RETURN(part::DagPartition u, part::evaluate_partition(dag, unlimited, std::move(stage_of_node)));
  return Evaluated{u.bottleneck, true};
}

struct BalanceRow {
  std::string model, machines;
  double ravnest = 0;
  Evaluated uniform, params;
  std::string method;
};
std::vector<BalanceRow> g_rows;

// The compiler's split against the two baselines on the same pipeline.
Status compare_baselines(const std::string& model, const std::string& machines, const part::WeightedDag& dag,
                         const part::Pipeline& pipeline, const part::DagPartition& ours) {
  const int k = static_cast<int>(pipeline.machines.size());
  RN_ASSIGN_OR_RETURN(std::vector<int> order, part::topological_order(dag));
  BalanceRow row{model, machines, 0, {}, {}, ours.method};
  RN_ASSIGN_OR_RETURN(Evaluated own, evaluate(dag, pipeline, ours.stage_of_node));
  row.ravnest = own.bottleneck;
  RN_ASSIGN_OR_RETURN(row.uniform, evaluate(dag, pipeline, split_by_weight(order, {}, k)));
  RN_ASSIGN_OR_RETURN(row.params, evaluate(dag, pipeline, split_by_weight(order, dag.memory, k)));
  g_rows.push_back(row);
  return ok_status();
}

void print_balance_table() {
  std::printf("\n== Balance: predicted bottleneck per micro-batch (s), lower is better ==\n");
  std::printf("%-22s %-22s %12s %12s %12s %9s %9s  %s\n", "model", "machines", "ravnest", "uniform", "params",
              "uni/rav", "par/rav", "method");
  for (const BalanceRow& r : g_rows)
    std::printf("%-22s %-22s %12.5g %11.5g%s %11.5g%s %9.2f %9.2f  %s\n", r.model.c_str(), r.machines.c_str(),
                r.ravnest, r.uniform.bottleneck, r.uniform.over_memory ? "*" : " ", r.params.bottleneck,
                r.params.over_memory ? "*" : " ", r.uniform.bottleneck / r.ravnest, r.params.bottleneck / r.ravnest,
                r.method.substr(0, 60).c_str());
  std::printf("(* = the split overflows a machine's memory; evaluated without the limits)\n");
}

// ---- models ----

// One pipeline of devices `members` (indices into `set`) as compile.cc's cluster_machines
// and split_cluster build it: node seconds on the first member, speeds relative to it,
// memory capacities, the schedule's micro-batches in flight, link bandwidths (bytes/s).
struct ClusterInput {
  std::vector<double> work;
  std::vector<part::Machine> machines;
  std::vector<std::vector<double>> bandwidth;
  std::vector<double> in_flight;
};
ClusterInput cluster_input(const part::DeviceSet& set, const std::vector<std::vector<part::PassTimes>>& times,
                           const std::vector<size_t>& members, const part::MemoryPlan& memory) {
  ClusterInput ci;
  double ref_total = 0;
  for (const part::PassTimes& t : times[members.front()]) ref_total += ci.work.emplace_back(t.total());
  const int k = static_cast<int>(members.size());
  for (size_t m : members) {
    double total = 0;
    for (const part::PassTimes& t : times[m]) total += t.total();
    ci.machines.push_back(part::Machine{set.devices[m].id, total > 0 && ref_total > 0 ? ref_total / total : 1.0,
                                        static_cast<double>(set.devices[m].memory_bytes), 1});
  }
  for (int s = 0; s < k; ++s)
    ci.in_flight.push_back(
        static_cast<double>(part::microbatches_in_flight(memory.schedule, k, s, memory.microbatches)));
  ci.bandwidth.assign(members.size(), std::vector<double>(members.size(), 0));
  for (size_t a = 0; a < members.size(); ++a)
    for (size_t b = 0; b < members.size(); ++b)
      if (a != b) ci.bandwidth[a][b] = set.link_between(members[a], members[b], part::default_link()).bytes_per_s();
  return ci;
}

// The compiler's split of `model` over one cluster, timed per phase (round 0 of compile.cc's
// calibration), then the baselines on the same pipeline. `free_links`: links cost nothing.
Status split_and_compare(const std::string& name, const std::string& machines_label, const Graph& model,
                         const ClusterInput& ci, const part::MemoryPlan& memory, bool free_links, bool programs) {
  const size_t k = ci.machines.size();
  const double state_factor = 2.0 + part::optimizer_state_factor(memory.optimizer);
  Stopwatch sw;
  part::ModelCostOptions cost;
  cost.parameter_state_factor = state_factor;
  cost.node_work = [&](const Node& n, const fe::OpCost&) {
    const size_t i = static_cast<size_t>(&n - model.nodes.data());
    return i < ci.work.size() ? ci.work[i] : 0.0;
  };
  RN_ASSIGN_OR_RETURN(part::WeightedDag dag, part::dag_from_graph(model, cost));
  print_lap("dag_from_graph", sw.lap());
  std::vector<int> order(k);
  std::iota(order.begin(), order.end(), 0);
  if (k > 1) {
    std::vector<part::Machine> conservative = ci.machines;
    for (auto& m : conservative) m.in_flight = ci.in_flight.front();
    std::vector<std::vector<double>> bandwidth = ci.bandwidth;  // free links: every link "infinitely" fast
    if (free_links)
      for (auto& row : bandwidth)
        for (double& b : row) b = b > 0 ? 1e30 : b;
    auto chosen = part::choose_machine_order(dag, conservative, bandwidth);
    if (chosen.ok()) order = chosen->order;
    print_lap("choose_machine_order (K=" + std::to_string(k) + ")", sw.lap());
  }
  part::Pipeline pipeline;
  for (size_t s = 0; s < k; ++s) {
    pipeline.machines.push_back(ci.machines[static_cast<size_t>(order[s])]);
    pipeline.machines.back().in_flight = ci.in_flight[s];
    if (s + 1 < k && !free_links)
      pipeline.link_bandwidth.push_back(ci.bandwidth[static_cast<size_t>(order[s])][static_cast<size_t>(order[s + 1])]);
  }
  auto blocks = part::find_blocks(model);
  print_lap("find_blocks", sw.lap());
  const bool by_blocks = k > 1 && blocks.ok() && blocks->num_blocks >= static_cast<int>(k);
  part::DagPartition ours;
  if (by_blocks) {
    RN_ASSIGN_OR_RETURN(part::BlockPartition bp, part::partition_by_blocks(model, pipeline, cost));
    ours = std::move(bp.partition);
    ours.method = "blocks: " + ours.method;
    print_lap("partition_by_blocks", sw.lap());
  } else {
    RN_ASSIGN_OR_RETURN(ours, part::partition_dag(dag, pipeline));
    print_lap("partition_dag", sw.lap());
  }
  if (programs) {
    RN_ASSIGN_OR_RETURN(auto ordered, part::order_by_stage(model, ours.stage_of_node));
    print_lap("order_by_stage", sw.lap());
    auto stage_programs =
        cg::build_stage_programs(ordered.first, ordered.second, static_cast<int>(k), cg::StageOptions{});
    print_lap("build_stage_programs (" + std::to_string(k) + " stages)", sw.lap());
    // compile.cc returns this error in its first calibration round: the split cannot be compiled.
    if (!stage_programs.ok()) {
      std::printf("  build_stage_programs FAILED on this split: %s\n", stage_programs.status().message().c_str());
      ours.method += " [stage programs fail]";
    }
  }
  return compare_baselines(name, machines_label, dag, pipeline, ours);
}

Status bench_model(const std::string& path, int64_t batch, const std::string& source_dir) {
  const std::string name = path.substr(path.find_last_of('/') + 1);
  std::printf("\n== %s (micro-batch %lld) ==\n", name.c_str(), static_cast<long long>(batch));
  // The import's phases one by one (import_model's order; its checks are left out).
  Stopwatch sw;
  RN_ASSIGN_OR_RETURN(onnx::ModelProto proto, read_model_proto(path));
  print_lap("import: read_model_proto (protobuf parse)", sw.lap());
  // As import_model: dim 0 of every graph input is the micro-batch; recorded shapes are recomputed.
  for (auto& in : *proto.mutable_graph()->mutable_input()) {
    auto* shape = in.mutable_type()->mutable_tensor_type()->mutable_shape();
    if (in.type().has_tensor_type() && shape->dim_size() > 0 && !shape->dim(0).has_dim_value())
      shape->mutable_dim(0)->set_dim_value(batch);
  }
  proto.mutable_graph()->clear_value_info();
  try {
    onnx::ShapeInferenceOptions options(/*check_type=*/true, /*strict_mode=*/1, /*data_prop=*/false);
    onnx::shape_inference::InferShapes(proto, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    return error(Code::kInvalidArgument, "ONNX shape inference failed on '", path, "': ", e.what());
  }
  print_lap("import: ONNX shape inference", sw.lap());
  const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.find_last_of('/'));
  RN_ASSIGN_OR_RETURN(Graph phased, graph_from_proto(proto, dir));
  print_lap("import: graph_from_proto (IR, initializer copies)", sw.lap());
  for (const auto& [name, tensor] : phased.initializers)
    if (tensor.dtype == DType::kF32) phased.parameters.insert(name);
  RN_RETURN_IF_ERROR(fe::fold_constants(phased));
  print_lap("import: fold_constants", sw.lap());
  RN_RETURN_IF_ERROR(fe::infer_shapes(phased));
  print_lap("import: infer_shapes (our rules)", sw.lap());
  fe::remove_dead_nodes(phased);
  RN_RETURN_IF_ERROR(fe::mark_state(phased));
  print_lap("import: remove_dead_nodes + mark_state", sw.lap());
  proto = onnx::ModelProto();
  phased = Graph();
  fe::ImportOptions io;
  io.batch = batch;
  sw.reset();
  RN_ASSIGN_OR_RETURN(Graph model, fe::import_model(path, io));
  const Lap import_lap = sw.lap();
  print_lap("import_model (read + ONNX inference + passes)", import_lap);
  int64_t params = 0;
  for (const std::string& p : model.parameters) params += model.initializers.at(p).numel();
  std::printf("  %zu nodes, %lld parameters\n", model.nodes.size(), static_cast<long long>(params));

  part::MemoryPlan memory;  // ravnestc's defaults: SGD with momentum, 1F1B; --microbatches 4
  memory.microbatches = 4;
  for (const char* file : {"three_laptops", "mixed_8"}) {
    std::printf(" -- devices %s\n", file);
    sw.reset();
    RN_ASSIGN_OR_RETURN(part::DeviceSet set, part::load_devices(source_dir + "/models/devices/" + file + ".json"));
    std::vector<std::vector<part::PassTimes>> times;
    for (const part::DeviceProfile& d : set.devices) times.push_back(part::graph_times(model, d));
    print_lap("graph_times on every device", sw.lap());
    // As `ravnestc compile --clusters 1 --stages N` with every machine of the file: the plan
    // fixes the cluster's machines (most memory first); the split orders them.
    part::ClusterOptions co;
    co.clusters = 1;
    co.stages_per_cluster = static_cast<int>(set.devices.size());
    co.memory = memory;
    co.samples_per_microbatch = static_cast<double>(batch);
    double total = 0, largest = 0;  // as compile.cc: the largest op's share on the first device
    for (const part::PassTimes& t : times.front()) {
      total += t.total();
      largest = std::max(largest, t.total());
    }
    co.largest_op_fraction = total > 0 ? largest / total : 0;
    RN_ASSIGN_OR_RETURN(part::ClusterPlan plan, part::form_clusters(set, part::model_totals(model), co));
    print_lap("form_clusters (1 cluster of " + std::to_string(co.stages_per_cluster) + ")", sw.lap());
    ClusterInput ci = cluster_input(set, times, plan.clusters.front().machines, memory);
    RN_RETURN_IF_ERROR(split_and_compare(name, file, model, ci, memory, false, true));
    if (set.devices.size() == 3) {
      std::printf("   the same machines, free links (compute balance only)\n");
      RN_RETURN_IF_ERROR(split_and_compare(name, std::string(file) + " free links", model, ci, memory, true, false));
    }
  }
  return ok_status();
}

// ---- synthetic DAG ----

// The Inception-like DAG of the file comment, with costs in seconds on a 100 GFLOP/s,
// 10 GB/s machine and memory in bytes (parameter bytes x 4: weights, gradients and Adam's
// two moments; activation: the node's output per micro-batch).
part::WeightedDag synthetic_dag(int target_nodes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  part::WeightedDag dag;
  std::vector<std::vector<int>> preds;
  const double batch = 2;
  double hw = 64 * 64, channels = 32;  // resolution and width at the current depth
  auto add = [&](std::vector<int> from, double c_in, double c_out, double kernel) {
    const double flops = 3 * 2 * c_in * c_out * kernel * kernel * hw * batch;  // F + B + W
    const double out_bytes = c_out * hw * batch * 4;
    dag.compute.push_back(flops / 100e9 + 3 * 2 * out_bytes / 10e9);
    dag.memory.push_back(c_in * c_out * kernel * kernel * 4 * 4);
    dag.activation.push_back(out_bytes);
    preds.push_back(std::move(from));
    return static_cast<int>(dag.compute.size()) - 1;
  };
  std::vector<double> out_channels;  // per node, to size its tensor
  auto node = [&](std::vector<int> from, double c_in, double c_out, double kernel) {
    out_channels.push_back(c_out);
    return add(std::move(from), c_in, c_out, kernel);
  };
  int last = node({}, 3, channels, 3);
  std::vector<int> module_inputs;
  const int levels = 5;
  while (static_cast<int>(dag.size()) < target_nodes - 12) {
    // Down-sample every fifth of the network: half the resolution, twice the channels.
    const int level = std::min(levels - 1, static_cast<int>(dag.size()) * levels / target_nodes);
    const double want_hw = 64.0 * 64.0 / std::pow(4.0, level), want_c = 32 * std::pow(2.0, level);
    if (want_hw != hw) {
      last = node({last}, channels, want_c, 3);
      hw = want_hw;
      channels = want_c;
    }
    const int in = last;
    module_inputs.push_back(in);
    const int branches = 2 + static_cast<int>(rng() % 3);
    std::vector<int> ends;
    for (int b = 0; b < branches; ++b) {
      const int len = 1 + static_cast<int>(rng() % 3);
      int prev = in;
      double c = channels;
      for (int i = 0; i < len; ++i) {
        const double c_out = channels / (1 << (rng() % 3));
        prev = node({prev}, c, c_out, i + 1 == len ? 3.0 : 1.0);
        c = c_out;
      }
      ends.push_back(prev);
    }
    if (unit(rng) < 0.3) ends.push_back(in);           // a residual edge around the module
    if (module_inputs.size() > 4 && unit(rng) < 0.05)  // a longer skip from a few modules back
      ends.push_back(module_inputs[module_inputs.size() - 2 - rng() % 3]);
    last = node(ends, channels * static_cast<double>(ends.size()), channels, 1);  // concat + 1x1 projection
  }
  while (static_cast<int>(dag.size()) < target_nodes) last = node({last}, channels, channels, 1);
  const size_t n = dag.size();
  std::vector<part::DagTensor> out(n);
  for (size_t v = 0; v < n; ++v) {
    out[v].producer = static_cast<int>(v);
    out[v].bytes = dag.activation[v] * 2;  // the activation forward, its gradient back
  }
  for (size_t v = 0; v < n; ++v)
    for (int p : preds[v]) out[static_cast<size_t>(p)].consumers.push_back(static_cast<int>(v));
  for (auto& t : out)
    if (!t.consumers.empty()) dag.tensors.push_back(std::move(t));
  return dag;
}

Status bench_synthetic(int nodes, uint32_t seed) {
  std::printf("\n== synthetic Inception-like DAG, %d nodes ==\n", nodes);
  Stopwatch sw;
  part::WeightedDag dag = synthetic_dag(nodes, seed);
  size_t edges = 0;
  for (const auto& t : dag.tensors) edges += t.consumers.size();
  std::printf("  %zu nodes, %zu tensors, %zu edges\n", dag.size(), dag.tensors.size(), edges);
  print_lap("generate", sw.lap());
  RN_ASSIGN_OR_RETURN(std::vector<int> topo, part::topological_order(dag));
  print_lap("topological_order", sw.lap());
  const double total_memory = std::accumulate(dag.memory.begin(), dag.memory.end(), 0.0) +
                              std::accumulate(dag.activation.begin(), dag.activation.end(), 0.0) * 8;
  for (int k : {4, 8}) {
    for (bool limited : {false, true}) {
      part::Pipeline p;
      const double speeds[] = {1, 2, 4};
      double speed_sum = 0;
      for (int s = 0; s < k; ++s) speed_sum += speeds[s % 3];
      for (int s = 0; s < k; ++s) {
        const double speed = speeds[s % 3];
        // Limited: 2x the machine's speed-proportional share of the model (in flight as 1F1B).
        p.machines.push_back({"m" + std::to_string(s), speed, limited ? 2 * total_memory * speed / speed_sum : 0,
                              static_cast<double>(k - s)});
        if (s + 1 < k) p.link_bandwidth.push_back(s % 2 ? 300e6 / 8 : 1e9 / 8);
      }
      const std::string label = "K=" + std::to_string(k) + (limited ? ", memory limits" : ", unlimited memory");
      std::printf(" -- %s\n", label.c_str());
      sw.reset();
      RN_ASSIGN_OR_RETURN(part::DagPartition dp, part::partition_chain_dp(dag, p, topo));
      print_lap("partition_chain_dp (one order)", sw.lap());
      part::PartitionOptions no_metis;
      no_metis.use_metis = false;
      RN_ASSIGN_OR_RETURN(part::DagPartition orders, part::partition_dag(dag, p, no_metis));
      print_lap("partition_dag without METIS (DP + refine)", sw.lap());
      RN_ASSIGN_OR_RETURN(part::DagPartition full, part::partition_dag(dag, p));
      const Lap full_lap = sw.lap();
      print_lap("partition_dag (all candidates)", full_lap);
      std::printf("  bottleneck: chain DP %.5g s, without METIS %.5g s, partition_dag %.5g s (%s)\n", dp.bottleneck,
                  orders.bottleneck, full.bottleneck, full.method.c_str());
      RN_RETURN_IF_ERROR(
          compare_baselines("synthetic " + std::to_string(dag.size() / 1000) + "k", label, dag, p, full));
      if (!limited) {
        std::vector<std::vector<double>> bw(static_cast<size_t>(k),
                                            std::vector<double>(static_cast<size_t>(k), 1e9 / 8));
        sw.reset();
        auto mo = part::choose_machine_order(dag, p.machines, bw);
        print_lap("choose_machine_order (as ravnestc does)", sw.lap());
        if (!mo.ok()) std::printf("  choose_machine_order: %s\n", mo.status().message().c_str());
      }
    }
  }
  return ok_status();
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string src = RAVNEST_SOURCE_DIR_BENCH;
  std::vector<std::string> models;
  for (const char* m : {"gpt2_small/gpt2_small_small", "bert/bert_small", "llama_block/llama_block_small",
                        "inception_v3/inception_v3_small", "resnet50/resnet50_small", "gpt_sorter/gpt_sorter_small"})
    models.push_back(src + "/models/" + m + ".onnx");
  int64_t batch = 2;
  int nodes = 100000;
  uint32_t seed = 1;
  bool synthetic = true, run_models = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--models" && has_value) {
      models = split_list(argv[++i]);
    } else if (a == "--batch" && has_value) {
      batch = std::atoll(argv[++i]);
    } else if (a == "--nodes" && has_value) {
      nodes = std::atoi(argv[++i]);
    } else if (a == "--seed" && has_value) {
      seed = static_cast<uint32_t>(std::atoi(argv[++i]));
    } else if (a == "--skip-synthetic") {
      synthetic = false;
    } else if (a == "--skip-models") {
      run_models = false;
    } else {
      std::fprintf(stderr,
                   "usage: ravnest-partition-bench [--models a.onnx,b.onnx] [--batch 2] [--nodes 100000] [--seed 1]\n"
                   "                               [--skip-synthetic] [--skip-models]\n");
      return 2;
    }
  }
  if (batch < 1 || nodes < 100) {
    std::fprintf(stderr, "error: --batch must be >= 1 and --nodes >= 100\n");
    return 2;
  }
  if (run_models)
    for (const std::string& m : models) {
      Status st = bench_model(m, batch, src);
      if (!st.ok()) std::fprintf(stderr, "error: %s: %s\n", m.c_str(), st.message().c_str());
    }
  if (synthetic) {
    Status st = bench_synthetic(nodes, seed);
    if (!st.ok()) std::fprintf(stderr, "error: synthetic: %s\n", st.message().c_str());
  }
  print_balance_table();
  return 0;
}
