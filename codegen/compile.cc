#include "codegen/compile.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <sstream>
#include <tuple>

#include "codegen/report.h"
#include "codegen/ring_plan.h"
#include "codegen/schedule.h"
#include "codegen/stages.h"
#include "common/sha256.h"
#include "frontend/import.h"
#include "frontend/op_table.h"
#include "frontend/rule_util.h"
#include "partitioner/blocks.h"
#include "partitioner/clusters.h"
#include "partitioner/cost_model.h"
#include "partitioner/dag_partition.h"
#include "partitioner/devices.h"
#include "partitioner/memory_model.h"

namespace ravnest::cg {
namespace fs = std::filesystem;

namespace {

// The unit machine of the cost model: 100 GFLOP/s, 10 GB/s of memory traffic,
// and (for schedule planning) links of 1 GB/s with 50 us latency.
constexpr double kFlopsPerS = 100e9, kMemBytesPerS = 10e9, kLinkBytesPerS = 1e9, kLinkLatencyS = 50e-6;

double predicted_seconds(double flops, double bytes) { return flops / kFlopsPerS + bytes / kMemBytesPerS; }

// Relative time of one node on the unit machine: training FLOPs plus forward
// bytes read three times (F, B, W). Only the ratios between nodes matter for
// the split.
double node_time(const Node& node, const Graph& g) {
  const fe::OpDef* def = fe::find_op(node.domain, node.op, static_cast<int>(g.opset));
  if (!def || !def->cost) return 0;
  fe::OpCost c = def->cost(node, g);
  return predicted_seconds(c.flops + c.backward_input_flops + c.backward_weight_flops, 3 * c.bytes);
}

// A cluster's split: which stage runs each node of `graph` (the model with its
// nodes reordered so that stages are non-decreasing, as build_stage_programs
// takes it), which of the cluster's machines runs each stage, and the
// partitioner's predicted time per stage.
struct ClusterSplit {
  Graph graph;
  std::vector<int> stage_of_node;
  std::vector<int> machine_of_stage;  // index into the cluster's machines
  std::vector<double> stage_time;
  std::vector<double> stage_compute;       // the compute part of stage_time
  std::vector<int> stage_of_model_node;    // the stages indexed like the model's nodes
  double bottleneck = 0;
  std::string method;
  std::string order_why;  // why the machines run in this order ("" when the order was given)
};

// The machines of one cluster as the splitter sees them.
struct ClusterMachines {
  std::vector<part::Machine> machines;          // speed relative to the work's unit, memory (0: unlimited)
  std::vector<std::vector<double>> bandwidth;   // bytes/s between machines; empty: the given order, kLinkBytesPerS
  std::vector<double> in_flight;                // micro-batches in flight per pipeline position
  double state_factor = 4;                      // bytes held per parameter byte (weights, grads, optimizer)
};

// The stage footprints (memory model) of a partition of `dag`.
std::vector<part::StageFootprint> footprints(const part::WeightedDag& dag, const std::vector<int>& stage_of_node,
                                             size_t k, double state_factor) {
  std::vector<part::StageFootprint> fp(k);
  for (size_t i = 0; i < dag.size(); ++i) {
    auto& f = fp[static_cast<size_t>(stage_of_node[i])];
    f.param_bytes += dag.memory[i] / state_factor;
    if (!dag.activation.empty()) f.stash_bytes += dag.activation[i];
  }
  return fp;
}

// Splits `model` over a cluster's machines (docs/partitioning.md): with a
// bandwidth matrix the pipeline order of the machines is chosen first (fastest
// links where the largest tensors cross); a transformer (repeated blocks, at
// least k of them) is cut only at block boundaries; any other graph goes to the
// DAG partitioner (METIS with acyclic refinement, checked against an exact order
// DP). `work[i]`: seconds of model.nodes[i] on a machine of speed 1. A split
// that cannot fit memory is the memory model's error for the best compute split.
Result<ClusterSplit> split_cluster(const Graph& model, const std::vector<double>& work, const ClusterMachines& cm,
                                   const part::MemoryPlan& memory_plan) {
  const size_t k = cm.machines.size();
  ClusterSplit split;
  part::ModelCostOptions cost;
  cost.parameter_state_factor = cm.state_factor;
  cost.node_work = [&](const Node& n, const fe::OpCost&) {
    const size_t i = static_cast<size_t>(&n - model.nodes.data());
    return i < work.size() ? work[i] : 0.0;
  };
  RN_ASSIGN_OR_RETURN(part::WeightedDag dag, part::dag_from_graph(model, cost));
  std::vector<int> order(k);
  for (size_t s = 0; s < k; ++s) order[s] = static_cast<int>(s);
  if (k > 1 && !cm.bandwidth.empty()) {
    // Order with every machine holding the first stage's in-flight micro-batches
    // (the most): an order chosen so fits wherever each machine lands.
    std::vector<part::Machine> conservative = cm.machines;
    for (auto& m : conservative) m.in_flight = cm.in_flight.front();
    auto chosen = part::choose_machine_order(dag, conservative, cm.bandwidth);
    if (chosen.ok()) {
      order = chosen->order;
      split.order_why = "chosen among the machine orders by the best split of each (fast links where large tensors "
                        "cross, fast machines where the work is)";
    } else {
      split.order_why = "as the cluster plan lists them (no order fits with the first stage's micro-batches in "
                        "flight on every machine: " + chosen.status().message() + ")";
    }
  }
  part::Pipeline pipeline;
  for (size_t s = 0; s < k; ++s) {
    pipeline.machines.push_back(cm.machines[static_cast<size_t>(order[s])]);
    pipeline.machines.back().in_flight = cm.in_flight[s];
    if (s + 1 < k)
      pipeline.link_bandwidth.push_back(cm.bandwidth.empty() ? kLinkBytesPerS
                                                             : cm.bandwidth[static_cast<size_t>(order[s])]
                                                                           [static_cast<size_t>(order[s + 1])]);
  }
  auto blocks = part::find_blocks(model);
  const bool by_blocks = k > 1 && blocks.ok() && blocks->num_blocks >= static_cast<int>(k);
  auto partition = [&](const part::Pipeline& p) -> Result<part::DagPartition> {
    if (k == 1) return part::evaluate_partition(dag, p, std::vector<int>(dag.size(), 0), "one stage");
    if (!by_blocks) return part::partition_dag(dag, p);
    RN_ASSIGN_OR_RETURN(part::BlockPartition bp, part::partition_by_blocks(model, p, cost));
    bp.partition.method =
        "block boundaries (" + std::to_string(blocks->num_blocks) + " blocks), " + bp.partition.method;
    return std::move(bp.partition);
  };
  auto result = partition(pipeline);
  if (!result.ok() && result.status().code() == Code::kResourceExhausted) {
    // The memory model's verdict on the best split by compute alone: who lacks what, and what would fit.
    part::Pipeline unlimited = pipeline;
    std::vector<part::MachineMemory> machines;
    for (auto& m : unlimited.machines) {
      machines.push_back({m.id, m.memory_bytes});
      m.memory_bytes = 0;
    }
    auto compute_only = partition(unlimited);
    if (compute_only.ok()) {
      Status fits = part::check_memory(footprints(dag, compute_only->stage_of_node, k, cm.state_factor), machines,
                                        memory_plan);
      if (!fits.ok()) return fits;
    }
  }
  if (!result.ok()) return result.status();
  // Only the last stage is fed the labels: a model carrying its own loss
  // (inputs data, labels) has every node that reads them, directly or through
  // others, on the last stage (their consumers are too, so the order stays
  // acyclic). The split alone may put e.g. the labels' Reshape anywhere.
  if (model.inputs.size() == 2) {
    std::set<std::string> from_labels{model.inputs[1]};
    for (size_t i = 0; i < model.nodes.size(); ++i) {
      const Node& n = model.nodes[i];
      if (std::none_of(n.inputs.begin(), n.inputs.end(), [&](const std::string& v) { return from_labels.count(v); }))
        continue;
      result->stage_of_node[i] = static_cast<int>(k) - 1;
      for (const auto& v : n.outputs)
        if (!v.empty()) from_labels.insert(v);
    }
  }
  RN_ASSIGN_OR_RETURN(auto ordered, part::order_by_stage(model, result->stage_of_node));
  split.graph = std::move(ordered.first);
  split.stage_of_node = std::move(ordered.second);
  split.machine_of_stage = order;
  split.stage_time = result->stage_time;
  split.stage_compute = result->stage_compute;
  split.stage_of_model_node = result->stage_of_node;
  split.bottleneck = result->bottleneck;
  split.method = result->method;
  return split;
}

// Bytes of weights held out of the model graph while its stages are planned: views
// into the mapped model file (the import left those out of the graph) and owned
// bytes moved out of it, by name.
struct HeldWeights {
  fe::WeightViews views;
  std::map<std::string, std::vector<uint8_t>> owned;
};

// Parameters with more elements than this are held out by take_weight_bytes.
constexpr int64_t kHeldMinElements = 1024;

// Moves the bytes of `model`'s parameters of over kHeldMinElements elements out
// of it (their dtype and shape stay), beside the `views` of those the import left
// in the model file. The splitter, the cost model and the stage
// programs read only parameters' types and shapes, so every copy of the model the
// calibration rounds make (one per split, one per stage build, each stage's
// weights) stops copying hundreds of MB of weights. Values a shape rule may read
// as constants (scalars, short vectors) keep their bytes.
HeldWeights take_weight_bytes(Graph& model, fe::WeightViews views) {
  HeldWeights held{std::move(views), {}};
  for (const std::string& name : model.parameters) {
    auto it = model.initializers.find(name);
    if (it == model.initializers.end() || it->second.numel() <= kHeldMinElements || held.views.bytes.count(name))
      continue;
    held.owned[name] = std::move(it->second.bytes);
    it->second.bytes.clear();
  }
  return held;
}

// The runtime tensor of weight `name` for a bundle: a view of its held bytes (no
// copy) or of the stage's own tensor. Both outlive the bundle writing.
rt::Tensor weight_tensor(const std::string& name, const TensorData& d, const HeldWeights& held) {
  std::span<const uint8_t> bytes(d.bytes);
  if (auto v = held.views.bytes.find(name); v != held.views.bytes.end()) bytes = v->second;
  else if (auto o = held.owned.find(name); o != held.owned.end()) bytes = o->second;
  if (bytes.empty()) return rt::Tensor::empty(d.dtype, d.shape);
  return rt::Tensor::view(d.dtype, d.shape, const_cast<uint8_t*>(bytes.data()));
}

// The dataset kind for `requested` ("auto": from the model's data input and logits).
Result<std::string> resolve_dataset(const Graph& model, const std::string& requested) {
  if (requested != "auto") return requested;
  auto io = model_io(model, StageOptions{});
  if (!io.ok()) return std::string("fashion-mnist");  // build_stage_programs reports the problem
  const ValueInfo* in = model.find_value(io->data);
  const ValueInfo* out = model.find_value(io->logits);
  if (in->dtype == DType::kF32) return std::string("fashion-mnist");
  if (in->dtype == DType::kI64) return std::string(out->dims.size() == 3 ? "sort" : "sort-classify");
  return error(Code::kUnsupported, "the model's data input '", in->name, "' is ", dtype_name(in->dtype),
               "; Ravnest's datasets feed f32 images or i64 tokens");
}

// Rounds of calibrating node costs against the stage programs (devices path).
constexpr int kCalibrationRounds = 4;

// Tags of tied-weight rings: above any averaging ring's tag.
constexpr uint32_t kTiedTagBase = 0x40000000;

// Parameters read by more than one stage of a cluster, with those stages in order.
std::map<std::string, std::vector<int>> tied_params(const std::vector<StageProgram>& stages) {
  std::map<std::string, std::vector<int>> holders;
  for (const StageProgram& sp : stages)
    for (const auto& p : sp.params) holders[p].push_back(sp.stage);
  std::erase_if(holders, [](const auto& e) { return e.second.size() < 2; });
  return holders;
}

// The memory model's plan for the compile options: optimizer state and the
// schedule's micro-batches in flight ("auto" may keep up to ZB-H2's 2p - 1).
Result<part::MemoryPlan> memory_plan_for(const CompileOptions& options) {
  part::MemoryPlan plan;
  RN_ASSIGN_OR_RETURN(plan.optimizer, part::parse_optimizer_kind(options.training.optimizer.type));
  if (plan.optimizer == part::OptimizerKind::kSgdMomentum && options.training.optimizer.momentum == 0)
    plan.optimizer = part::OptimizerKind::kSgd;
  if (options.schedule == "auto") {
    plan.schedule = part::ScheduleKind::kZbH2;
  } else {
    RN_ASSIGN_OR_RETURN(plan.schedule, part::parse_schedule_kind(options.schedule));
  }
  plan.microbatches = options.microbatches;
  return plan;
}

// "host:port" of a device's profile; an error names the device.
Result<std::pair<std::string, uint16_t>> split_address(const part::DeviceProfile& device) {
  const size_t colon = device.address.rfind(':');
  const std::string digits = colon == std::string::npos ? "" : device.address.substr(colon + 1);
  long long port = 0;
  if (colon > 0 && !digits.empty() && digits.size() <= 5 &&
      std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    port = std::stoll(digits);
  if (port < 1 || port > 65535)
    return error(Code::kInvalidArgument, "device '", device.id, "': address '", device.address,
                 "' is not HOST:PORT with a port in 1..65535; fix it in the devices file");
  std::string host = device.address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return std::make_pair(host, static_cast<uint16_t>(port));
}

// What the devices path decides before splitting: the devices, the cluster plan,
// and the per-node predicted times on every device.
struct DevicesPlan {
  part::DeviceSet set;
  part::ClusterPlan plan;
  std::vector<std::vector<part::PassTimes>> times;  // [device][model node]
};

Result<DevicesPlan> plan_devices(const CompileOptions& options, const Graph& model, const part::MemoryPlan& memory,
                                 int64_t micro) {
  DevicesPlan dp;
  RN_ASSIGN_OR_RETURN(dp.set, part::load_devices(options.devices_path));
  for (const part::DeviceProfile& d : dp.set.devices) {
    RN_RETURN_IF_ERROR(split_address(d).status());
    dp.times.push_back(part::graph_times(model, d));
  }
  part::ClusterOptions co;
  co.clusters = options.device_clusters;
  co.stages_per_cluster = options.device_stages;
  co.memory = memory;
  co.samples_per_microbatch = static_cast<double>(micro);
  co.average_every = static_cast<int>(std::clamp<int64_t>(options.training.average_every, 1, int64_t{1} << 20));
  // The largest op's share of the model (on the first device): the balance a split cannot beat.
  double total = 0, largest = 0;
  for (const part::PassTimes& t : dp.times.front()) {
    total += t.total();
    largest = std::max(largest, t.total());
  }
  co.largest_op_fraction = total > 0 ? largest / total : 0;
  RN_ASSIGN_OR_RETURN(dp.plan, part::form_clusters(dp.set, part::model_totals(model), co));
  return dp;
}

// The splitter's view of the machines `members` (device indices) of one cluster:
// per-node work in seconds on the first member, speeds relative to it.
std::pair<std::vector<double>, ClusterMachines> cluster_machines(const DevicesPlan& dp,
                                                                  const std::vector<size_t>& members,
                                                                  const part::MemoryPlan& memory) {
  const auto& ref = dp.times[members.front()];
  std::vector<double> work(ref.size());
  double ref_total = 0;
  for (size_t i = 0; i < ref.size(); ++i) ref_total += work[i] = ref[i].total();
  ClusterMachines cm;
  const int k = static_cast<int>(members.size());
  for (size_t m : members) {
    const part::DeviceProfile& d = dp.set.devices[m];
    double total = 0;
    for (const part::PassTimes& t : dp.times[m]) total += t.total();
    cm.machines.push_back(part::Machine{d.id, total > 0 && ref_total > 0 ? ref_total / total : 1.0,
                                        static_cast<double>(d.memory_bytes), 1});
  }
  for (int s = 0; s < k; ++s)
    cm.in_flight.push_back(static_cast<double>(part::microbatches_in_flight(memory.schedule, k, s, memory.microbatches)));
  if (k > 1) {
    cm.bandwidth.assign(members.size(), std::vector<double>(members.size(), 0));
    for (size_t a = 0; a < members.size(); ++a)
      for (size_t b = 0; b < members.size(); ++b)
        if (a != b) cm.bandwidth[a][b] = dp.set.link_between(members[a], members[b], part::default_link()).bytes_per_s();
  }
  cm.state_factor = 2.0 + part::optimizer_state_factor(memory.optimizer);
  return {std::move(work), std::move(cm)};
}

// Predicted seconds of one run of a stage program on `device`: every kernel it
// runs (the loss and the gradient ops included) under the cost model, plus the
// fixed cost of a pass (the executor's run and the trainer's work around it).
double program_seconds(const Graph& program, const part::DeviceProfile& device) {
  double seconds = program.nodes.empty() ? 0.0 : part::stage_pass_overhead(device);
  for (const part::PassTimes& t : part::graph_times(program, device)) seconds += t.f;
  return seconds;
}

// The bytes of a boundary tensor per micro-batch.
double boundary_bytes(const rt::BoundaryTensor& t) {
  return static_cast<double>(numel(t.shape)) * static_cast<double>(dtype_size(t.dtype));
}

}  // namespace

Result<CompileSummary> compile_model(const CompileOptions& given, std::ostream& report) {
  CompileOptions options = given;
  const bool with_devices = !options.devices_path.empty();
  // The cluster former may choose several clusters: they average every 10 steps unless told otherwise.
  if (with_devices && options.training.average_every < 1) options.training.average_every = 10;
  if (options.batch < 1 || options.microbatches < 1 || options.batch % options.microbatches != 0)
    return error(Code::kInvalidArgument, "--batch ", options.batch, " must be a positive multiple of --microbatches ",
                 options.microbatches);
  if (options.microbatches > 65536)
    return error(Code::kInvalidArgument, "--microbatches ", options.microbatches, " is over the limit of 65536");
  const int64_t micro = options.batch / options.microbatches;
  RN_RETURN_IF_ERROR(rt::validate_optimizer(options.training));
  RN_ASSIGN_OR_RETURN(part::MemoryPlan memory, memory_plan_for(options));

  fe::ImportOptions import_options;
  import_options.shapes = options.shapes;
  import_options.batch = micro;
  fe::WeightViews views;
  RN_ASSIGN_OR_RETURN(Graph model, fe::import_model(options.model_path, import_options, &views));
  rt::DataConfig data = options.training.data;
  RN_ASSIGN_OR_RETURN(data.kind, resolve_dataset(model, options.dataset));
  // The model's large weights wait here (most in the mapped model file) until the bundles are written.
  const HeldWeights held_weights = take_weight_bytes(model, std::move(views));

  // The clusters: from the devices file (cluster formation), or as many stages as asked on unit machines.
  DevicesPlan devices;
  std::vector<int> cluster_stages;
  if (with_devices) {
    RN_ASSIGN_OR_RETURN(devices, plan_devices(options, model, memory, micro));
    for (const part::Cluster& c : devices.plan.clusters) cluster_stages.push_back(static_cast<int>(c.machines.size()));
  } else {
    cluster_stages = options.cluster_stages.empty() ? std::vector<int>{options.stages} : options.cluster_stages;
  }
  int total_nodes = 0;
  for (int k : cluster_stages) {
    if (k < 1) return error(Code::kInvalidArgument, "--stages must be at least 1 per cluster");
    total_nodes += k;
  }
  if (!with_devices && (options.base_port < 1 || options.base_port + total_nodes > 65535))
    return error(Code::kInvalidArgument, "--base-port ", options.base_port, " leaves no room for ", total_nodes, " nodes");
  const int num_clusters = static_cast<int>(cluster_stages.size());
  if (options.training.average_optimizer_state && options.training.compression.averaging.codec != rt::Codec::kRaw)
    return error(Code::kInvalidArgument, "--average-optimizer-state needs uncompressed averaging (drop --compress-averaging)");
  if (options.training.late_deadline_s > 0 && options.training.compression.averaging.codec != rt::Codec::kRaw)
    return error(Code::kInvalidArgument, "--late-deadline needs uncompressed averaging (a compressed ring keeps a "
                 "reference copy every member updates each round); drop --compress-averaging or --late-deadline");
  if (options.joinable) {
    const char* why = num_clusters < 2                                                   ? "needs several clusters"
                      : options.training.mode == "async"                                 ? "needs synchronous training"
                      : options.training.compression.averaging.codec != rt::Codec::kRaw ? "needs uncompressed averaging"
                      : !options.local_steps.empty() ? "needs one --average-every for every cluster (not --local-steps)"
                                                     : nullptr;
    if (why)
      return error(Code::kInvalidArgument, "--joinable ", why, " (new clusters copy cluster 0 and join its rounds); ",
                   "drop --joinable or change the compile");
  }
  if (!options.local_steps.empty()) {
    if (static_cast<int>(options.local_steps.size()) != num_clusters)
      return error(Code::kInvalidArgument, "--local-steps lists ", options.local_steps.size(), " clusters but there are ",
                   num_clusters);
    for (int64_t k : options.local_steps)
      if (k < 1) return error(Code::kInvalidArgument, "--local-steps needs positive numbers of steps");
  }
  if (num_clusters > 1 && options.training.average_every < 1 && options.local_steps.empty())
    return error(Code::kInvalidArgument, "with ", num_clusters, " clusters, --average-every K (steps) must be >= 1");

  // Per cluster: its split, stage programs, the report of each stage and schedules.
  struct Cluster {
    ClusterSplit split;
    std::vector<StageProgram> stages;
    std::vector<rt::StageSchedule> schedules;
    std::vector<size_t> device_of_stage;  // with devices: the machine of each stage
    ClusterReport report;
    int first_node = 0;
    double bottleneck = 0;  // with devices: predicted seconds of the slowest stage per micro-batch
  };
  std::vector<Cluster> clusters(static_cast<size_t>(num_clusters));
  std::vector<std::string> node_machine(static_cast<size_t>(total_nodes));
  std::vector<rt::PeerAddress> node_address(static_cast<size_t>(total_nodes));
  auto node_id = [](int i) { return "node" + std::to_string(i); };
  StageOptions stage_options;
  stage_options.optimizer = options.training.optimizer;
  stage_options.loss = options.loss;
  const part::LinkEstimate unit_link{kLinkBytesPerS * 8, kLinkLatencyS, "unit"};
  int next_node = 0;
  for (int c = 0; c < num_clusters; ++c) {
    Cluster& cl = clusters[static_cast<size_t>(c)];
    const int k = cluster_stages[static_cast<size_t>(c)];
    cl.first_node = next_node;
    next_node += k;
    std::vector<double> work;
    ClusterMachines cm;
    if (with_devices) {
      std::tie(work, cm) = cluster_machines(devices, devices.plan.clusters[static_cast<size_t>(c)].machines, memory);
    } else {
      for (const Node& n : model.nodes) work.push_back(node_time(n, model));
      for (int s = 0; s < k; ++s) {
        cm.machines.push_back(part::Machine{"stage" + std::to_string(s), 1.0, 0, 1});
        cm.in_flight.push_back(1);
      }
    }
    // With machines, the node costs are calibrated against the kernels the stage
    // programs really run (the gradient ops, the loss): each round scales the
    // nodes of every stage by its programs' predicted time over the split's,
    // and splits again; the split whose programs have the smallest bottleneck wins.
    double best = std::numeric_limits<double>::infinity();
    for (int round = 0; round < (with_devices ? kCalibrationRounds : 1); ++round) {
      auto split_or = split_cluster(model, work, cm, memory);
      auto programs_or = split_or.ok() ? build_stage_programs(split_or->graph, split_or->stage_of_node, k, stage_options)
                                       : Result<std::vector<StageProgram>>(split_or.status());
      // A later round's split that the stage programs cannot take (e.g. the labels read before the
      // last stage) keeps the best split so far.
      if (!programs_or.ok()) {
        if (round == 0) return programs_or.status();
        break;
      }
      ClusterSplit split = std::move(*split_or);
      std::vector<StageProgram> programs = std::move(*programs_or);
      std::vector<double> actual(static_cast<size_t>(k), 0);
      double bottleneck = 0;
      if (with_devices) {
        const auto& members = devices.plan.clusters[static_cast<size_t>(c)].machines;
        for (const StageProgram& sp : programs) {
          const size_t s = static_cast<size_t>(sp.stage);
          const part::DeviceProfile& dev = devices.set.devices[members[static_cast<size_t>(split.machine_of_stage[s])]];
          actual[s] = program_seconds(sp.forward, dev) + program_seconds(sp.backward, dev) +
                      program_seconds(sp.weight, dev) + part::gradient_accumulation_seconds(sp.weight, dev);
          bottleneck = std::max(bottleneck, actual[s] + split.stage_time[s] - split.stage_compute[s]);
        }
        for (size_t i = 0; i < work.size(); ++i) {
          const size_t s = static_cast<size_t>(split.stage_of_model_node[i]);
          if (split.stage_compute[s] > 0 && actual[s] > 0) work[i] *= actual[s] / split.stage_compute[s];
        }
      }
      if (bottleneck < best * (1 - 1e-9) || round == 0) {
        best = bottleneck;
        cl.bottleneck = bottleneck;
        cl.split = std::move(split);
        cl.stages = std::move(programs);
      }
    }

    // Each stage's report: its machine, memory and predicted times.
    cl.report.index = c;
    cl.report.method = cl.split.method;
    cl.report.order = cl.split.order_why;
    for (int s = 0; s < k; ++s) {
      const int node = cl.first_node + s;
      StageReport r;
      r.stage = s;
      r.node_id = node_id(node);
      if (with_devices) {
        const size_t d = devices.plan.clusters[static_cast<size_t>(c)].machines[static_cast<size_t>(
            cl.split.machine_of_stage[static_cast<size_t>(s)])];
        cl.device_of_stage.push_back(d);
        const part::DeviceProfile& dev = devices.set.devices[d];
        RN_ASSIGN_OR_RETURN(auto hp, split_address(dev));
        node_address[static_cast<size_t>(node)] = rt::PeerAddress{r.node_id, hp.first, hp.second};
        r.machine = dev.id;
        r.capacity = static_cast<double>(dev.memory_bytes);
      } else {
        node_address[static_cast<size_t>(node)] =
            rt::PeerAddress{r.node_id, options.host, static_cast<uint16_t>(options.base_port + node)};
        r.machine = "unit machine";
      }
      node_machine[static_cast<size_t>(node)] = r.machine;
      r.address = node_address[static_cast<size_t>(node)].host + ":" +
                  std::to_string(node_address[static_cast<size_t>(node)].port);
      cl.report.stages.push_back(std::move(r));
    }
    // The link from stage s to s + 1.
    auto link = [&](int s) {
      if (!with_devices) return unit_link;
      return devices.set.link_between(cl.device_of_stage[static_cast<size_t>(s)],
                                      cl.device_of_stage[static_cast<size_t>(s + 1)], part::default_link());
    };
    ScheduleCosts schedule_costs;
    double comm = 0;
    for (const StageProgram& sp : cl.stages) {
      StageReport& r = cl.report.stages[static_cast<size_t>(sp.stage)];
      r.ops = static_cast<int64_t>(sp.nodes.size());
      for (size_t i = 0; i < sp.nodes.size(); ++i) r.nodes += (i ? ", " : "") + sp.nodes[i];
      r.flops_f = sp.forward_flops;
      r.flops_b = sp.backward_input_flops;
      r.flops_w = sp.backward_weight_flops;
      part::StageFootprint fp;
      std::set<std::string> params(sp.params.begin(), sp.params.end());
      for (const auto& [name, tensor] : sp.weights)
        if (params.count(name)) {
          r.parameters += tensor.numel();
          fp.param_bytes += static_cast<double>(tensor.numel()) * static_cast<double>(dtype_size(tensor.dtype));
        }
      for (size_t i = 0; i < cl.split.graph.nodes.size(); ++i) {
        if (cl.split.stage_of_node[i] != sp.stage) continue;
        for (const std::string& out : cl.split.graph.nodes[i].outputs) {
          const ValueInfo* v = out.empty() ? nullptr : cl.split.graph.find_value(out);
          if (v && v->dtype == DType::kF32) fp.stash_bytes += fe::rules::value_bytes(cl.split.graph, out);
        }
      }
      if (with_devices) {
        const part::DeviceProfile& dev = devices.set.devices[cl.device_of_stage[static_cast<size_t>(sp.stage)]];
        r.f_s = program_seconds(sp.forward, dev);
        r.b_s = program_seconds(sp.backward, dev);
        r.w_s = program_seconds(sp.weight, dev) + part::gradient_accumulation_seconds(sp.weight, dev);
      } else {
        r.f_s = predicted_seconds(sp.forward_flops, sp.forward_bytes);
        r.b_s = predicted_seconds(sp.backward_input_flops, sp.forward_bytes);
        r.w_s = predicted_seconds(sp.backward_weight_flops, sp.forward_bytes / 2);
      }
      const part::StageMemory mem = part::stage_memory(fp, k, sp.stage, memory);
      r.mem_params = mem.params;
      r.mem_grads = mem.grads;
      r.mem_optimizer = mem.optimizer;
      r.mem_activations = mem.activations;
      r.in_flight = mem.in_flight;
      // Each crossing tensor moves forward and its gradient back: two transfers per link.
      for (const auto& t : sp.recv) r.transfer_s += 2 * link(sp.stage - 1).transfer_seconds(boundary_bytes(t));
      for (const auto& t : sp.send) {
        const double seconds = link(sp.stage).transfer_seconds(boundary_bytes(t));
        r.sends.push_back({t.name, shape_str(t.shape) + " " + dtype_name(t.dtype), boundary_bytes(t), seconds});
        r.transfer_s += 2 * seconds;
        comm = std::max(comm, seconds);
      }
      schedule_costs.stages.push_back({r.f_s, r.b_s, r.w_s});
    }
    // "auto" optimises for these predicted F/B/W seconds per stage and the slowest transfer.
    schedule_costs.comm = comm;
    RN_ASSIGN_OR_RETURN(cl.schedules, make_schedules(options.schedule, k, static_cast<int>(options.microbatches),
                                                     schedule_costs));
  }
  auto address = [&](int i) { return node_address[static_cast<size_t>(i)]; };

  // The stage machines in the order backups go to them: least reliable first, then slowest (without a devices
  // file: the stages in order, cluster by cluster). Joining nodes of a one-cluster run take cluster 0's order.
  std::vector<std::pair<int, int>> backup_preference;  // (cluster, stage)
  for (int c = 0; c < num_clusters; ++c)
    for (int s = 0; s < cluster_stages[static_cast<size_t>(c)]; ++s) backup_preference.emplace_back(c, s);
  if (with_devices) {
    auto device_of = [&](std::pair<int, int> cs) -> const part::DeviceProfile& {
      const Cluster& cl = clusters[static_cast<size_t>(cs.first)];
      return devices.set.devices[cl.device_of_stage[static_cast<size_t>(cs.second)]];
    };
    std::stable_sort(backup_preference.begin(), backup_preference.end(), [&](auto a, auto b) {
      const part::DeviceProfile& da = device_of(a);
      const part::DeviceProfile& db = device_of(b);
      if (da.reliability != db.reliability) return da.reliability < db.reliability;
      return da.gemm_gflops < db.gemm_gflops;
    });
  }
  // Backup nodes: (cluster, stage) -> its backup's address.
  std::map<std::pair<int, int>, rt::PeerAddress> backups;
  {
    std::vector<std::pair<std::pair<int, int>, rt::PeerAddress>> wanted;
    if (with_devices) {
      std::vector<size_t> backup_devices;
      for (size_t d = 0; d < devices.set.devices.size(); ++d)
        if (devices.set.devices[d].role == part::DeviceRole::kBackup) backup_devices.push_back(d);
      for (size_t i = 0; i < backup_devices.size() && i < backup_preference.size(); ++i) {
        RN_ASSIGN_OR_RETURN(auto hp, split_address(devices.set.devices[backup_devices[i]]));
        wanted.emplace_back(backup_preference[i], rt::PeerAddress{"", hp.first, hp.second});
      }
    } else {
      const int last_port = options.base_port + total_nodes + static_cast<int>(options.backup_stages.size()) - 1;
      if (!options.backup_stages.empty() && last_port > 65535)
        return error(Code::kInvalidArgument, "--base-port ", options.base_port, " leaves no room for ", total_nodes,
                     " nodes and ", options.backup_stages.size(), " backups");
      for (size_t i = 0; i < options.backup_stages.size(); ++i)
        wanted.emplace_back(options.backup_stages[i],
                            rt::PeerAddress{"", options.host, static_cast<uint16_t>(options.base_port + total_nodes +
                                                                                    static_cast<int>(i))});
    }
    if (!wanted.empty() || (num_clusters > 1 && options.join_backups)) {
      if (options.training.mode == "async")
        return error(Code::kUnsupported, "backup nodes need synchronous training (a replayed step must give the same "
                     "update): drop --async or --backup-stages");
      // With several clusters a takeover replays at most one averaging round, from the results its ring
      // members keep of their last round (docs/faults.md); these features keep more state than that.
      const rt::TrainingConfig& t = options.training;
      const char* why = nullptr;
      if (num_clusters > 1 && options.joinable) why = "--joinable (new clusters; --join-backups takes joiners as backups)";
      if (num_clusters > 1 && t.late_deadline_s > 0) why = "--late-deadline";
      if (num_clusters > 1 && t.compression.averaging.codec != rt::Codec::kRaw) why = "compressed averaging";
      if (num_clusters > 1 && t.average_optimizer_state) why = "--average-optimizer-state";
      if (why)
        return error(Code::kUnsupported, "backup nodes in a run of several clusters do not work with ", why,
                     " yet; drop one of them");
      if (num_clusters > 1 && t.average_every % t.backup_every != 0)
        return error(Code::kInvalidArgument, "--backup-every ", t.backup_every, " must divide --average-every ",
                     t.average_every, " in a run of several clusters (a takeover may replay at most one averaging "
                     "round)");
    }
    for (size_t i = 0; i < wanted.size(); ++i) {
      auto [cs, addr] = wanted[i];
      const auto [c, stage] = cs;
      if (c < 0 || c >= num_clusters)
        return error(Code::kInvalidArgument, "--backup-stages: cluster ", c, " is out of range (clusters 0..",
                     num_clusters - 1, ")");
      if (stage < 0 || stage >= cluster_stages[static_cast<size_t>(c)])
        return error(Code::kInvalidArgument, "--backup-stages: stage ", stage, " of cluster ", c,
                     " is out of range (stages 0..", cluster_stages[static_cast<size_t>(c)] - 1, ")");
      if (backups.count(cs))
        return error(Code::kInvalidArgument, "--backup-stages: stage ", stage, " of cluster ", c, " is listed twice");
      addr.id = node_id(total_nodes + static_cast<int>(i));
      backups[cs] = addr;
    }
  }
  // The same by worker id, for the members of averaging rings.
  std::map<std::string, rt::PeerAddress> backup_of_node;
  for (const auto& [cs, addr] : backups)
    backup_of_node[node_id(clusters[static_cast<size_t>(cs.first)].first_node + cs.second)] = addr;

  std::map<std::string, int> node_index;  // node id -> global index, for ring members' addresses
  for (int i = 0; i < total_nodes; ++i) node_index[node_id(i)] = i;

  // The flexible update rule from the devices' measured speed: unless given, each
  // cluster's local steps per round are --average-every scaled by its predicted
  // step time relative to the fastest cluster's, so all reach the ring together.
  std::vector<int64_t> local_steps = options.local_steps;
  if (with_devices && num_clusters > 1 && local_steps.empty()) {
    std::vector<double> step_s;
    for (size_t c = 0; c < clusters.size(); ++c) {
      const double fill = static_cast<double>(options.microbatches + cluster_stages[c] - 1);
      step_s.push_back(clusters[c].bottleneck * fill);
    }
    const double fastest = *std::min_element(step_s.begin(), step_s.end());
    if (fastest > 0)
      for (double t : step_s)
        local_steps.push_back(std::max<int64_t>(
            1, std::llround(static_cast<double>(options.training.average_every) * fastest / t)));
    if (std::all_of(local_steps.begin(), local_steps.end(), [&](int64_t k) { return k == local_steps[0]; }))
      local_steps.clear();  // all equal: plain periodic averaging
  }
  // Runs of several clusters whose ring members may be replaced by backups, compiled or joining.
  const bool backups_in_rings = num_clusters > 1 && (!backups.empty() || options.join_backups);
  if (backups_in_rings && !local_steps.empty())
    return error(Code::kUnsupported, "backup nodes in a run of several clusters do not work with local steps per "
                 "cluster (--local-steps, or the machines' different speeds) yet; give --local-steps K,K,... with one K "
                 "for all, or drop the backups");

  // The averaging rings: parameters (and running state) laid end to end in the
  // order the first cluster's stages hold them, so its stages own contiguous
  // runs (a DAG split need not follow the model's node order).
  std::vector<rt::RingSpec> rings;
  if (num_clusters > 1) {
    std::vector<std::pair<std::string, int64_t>> params;
    std::set<std::string> seen;
    std::map<std::string, size_t> position;
    for (const Node& n : clusters[0].split.graph.nodes)
      for (const auto& in : n.inputs)
        if ((model.parameters.count(in) || model.state.count(in)) && seen.insert(in).second) {
          position[in] = params.size();
          params.emplace_back(in, model.initializers.at(in).numel());
        }
    std::vector<ClusterLayout> layouts;
    for (const Cluster& cl : clusters) {
      ClusterLayout layout;
      for (const StageProgram& sp : cl.stages) {
        layout.node_ids.push_back(node_id(cl.first_node + sp.stage));
        std::vector<std::string> held = sp.params;
        held.insert(held.end(), sp.state.begin(), sp.state.end());
        std::sort(held.begin(), held.end(),
                  [&](const std::string& a, const std::string& b) { return position.at(a) < position.at(b); });
        layout.stage_params.push_back(std::move(held));
      }
      layouts.push_back(std::move(layout));
    }
    RN_ASSIGN_OR_RETURN(rings, plan_rings(params, layouts));
  }

  CompileSummary summary;
  summary.stages = total_nodes;

  // Every bundle's manifest, in summary.node_dirs' order: written once all files are and the run id is known.
  std::vector<rt::Manifest> manifests;
  CompileReport rep;
  if (with_devices) {
    rep.devices = options.devices_path + " (" + std::to_string(devices.set.devices.size()) + " machines)";
    rep.cluster_why = devices.plan.explanation;
  }
  for (int c = 0; c < num_clusters; ++c) {
    Cluster& cl = clusters[static_cast<size_t>(c)];
    const int k = cluster_stages[static_cast<size_t>(c)];
    for (const StageProgram& sp : cl.stages) {
      const int index = cl.first_node + sp.stage;
      StageReport& r = cl.report.stages[static_cast<size_t>(sp.stage)];
      rt::Manifest m;
      m.model = fs::path(options.model_path).filename().string();
      m.self = address(index);
      m.stage = sp.stage;
      m.num_stages = k;
      if (sp.stage > 0) m.prev = address(index - 1);
      if (sp.stage + 1 < k) m.next = address(index + 1);
      m.cluster = c;
      m.num_clusters = num_clusters;
      std::set<int> ring_peer_indices;
      for (const rt::RingSpec& ring : rings)
        if (std::find(ring.members.begin(), ring.members.end(), m.self.id) != ring.members.end()) {
          m.rings.push_back(ring);
          for (const auto& member : ring.members)
            if (member != m.self.id) ring_peer_indices.insert(node_index.at(member));
        }
      // Parameters shared with other stages of this cluster (tied weights): one
      // gradient-sum ring per parameter over the stages that hold it.
      for (const auto& [param, holders] : tied_params(cl.stages)) {
        if (std::find(holders.begin(), holders.end(), sp.stage) == holders.end()) continue;
        if (num_clusters > 1)
          return error(Code::kUnsupported, "parameter '", param, "' is read by stages ", holders.front(), " and ",
                       holders.back(), " (a tied weight); tied weights split across stages are supported with one "
                       "cluster only so far; use --stages 1 or give the clusters one stage each");
        rt::RingSpec ring;
        ring.tag = kTiedTagBase + static_cast<uint32_t>(m.tied.size());
        for (int h : holders) {
          ring.members.push_back(node_id(cl.first_node + h));
          if (h != sp.stage) ring_peer_indices.insert(cl.first_node + h);
        }
        const auto& weights = cl.stages[static_cast<size_t>(sp.stage)].weights;
        auto w = std::find_if(weights.begin(), weights.end(), [&](const auto& e) { return e.first == param; });
        ring.pieces.push_back(rt::RingPiece{param, 0, w->second.numel()});
        m.tied.push_back(std::move(ring));
      }
      for (int peer : ring_peer_indices) m.ring_peers.push_back(address(peer));
      if (!backups.empty() && !m.tied.empty())
        return error(Code::kUnsupported, "backup nodes with tied weights (parameter '", m.tied[0].pieces[0].param,
                     "' shared by two stages) are not supported yet; drop --backup-stages or untie the weights");
      for (const auto& [cs, addr] : backups)
        if (cs.first == c) m.backups[cs.second] = addr;
      for (const rt::RingSpec& ring : m.rings)
        for (const auto& member : ring.members)
          if (auto b = backup_of_node.find(member); b != backup_of_node.end() && member != m.self.id)
            m.ring_backups[member] = b->second;
      // Nodes joining during the run become backups (docs/faults.md), under the same conditions as compiled ones
      // (several clusters: with backups or --join-backups, of a stage of the cluster they ask); with several
      // clusters and --joinable they form new clusters, copies of cluster 0's stages.
      if (num_clusters == 1 && options.training.mode != "async" && tied_params(cl.stages).empty())
        for (auto [cluster, stage] : backup_preference) m.join_targets.emplace_back(stage, address(cl.first_node + stage));
      if (backups_in_rings && tied_params(cl.stages).empty())
        for (auto [cluster, stage] : backup_preference)
          if (cluster == c) m.join_targets.emplace_back(stage, address(cl.first_node + stage));
      if (num_clusters > 1 && options.joinable)
        for (int stage = 0; stage < cluster_stages[0]; ++stage)
          m.join_targets.emplace_back(stage, address(clusters[0].first_node + stage));
      m.training = options.training;
      // Re-planning ring orders probes every member at set rounds; a backup that took a member's place mid-run
      // has no part in the probes it missed, so runs of several clusters with backups keep their first orders.
      if (backups_in_rings) {
        m.training.replan_every = 0;
        m.training.backups_in_rings = true;
      }
      m.training.data = data;
      if (!local_steps.empty()) {
        m.training.average_every = local_steps[static_cast<size_t>(c)];
        m.training.local_steps_max = *std::max_element(local_steps.begin(), local_steps.end());
      }
      m.training.batch = options.batch;
      m.training.microbatches = options.microbatches;
      m.training.microbatch_size = micro;
      m.recv = sp.recv;
      m.send = sp.send;
      m.data_input = sp.data_input;
      m.labels_input = sp.labels_input;
      m.loss_output = sp.loss_output;
      m.logits_output = sp.logits_output;
      m.loss_reduction = sp.loss_reduction;
      m.params = sp.params;
      m.state = sp.state;
      m.stash = sp.stash;
      m.wstash = sp.wstash;
      m.programs = {{"forward", "forward.onnx"}, {"backward", "backward.onnx"},
                    {"weight", "weight.onnx"}, {"optimizer", "optimizer.onnx"}};
      std::vector<std::pair<std::string, rt::Tensor>> weights;
      for (const auto& [name, tensor] : sp.weights)
        weights.emplace_back(name, weight_tensor(name, tensor, held_weights));
      const rt::StageSchedule& schedule = cl.schedules[static_cast<size_t>(sp.stage)];
      std::string dir = (fs::path(options.out_dir) / m.self.id).string();
      RN_RETURN_IF_ERROR(write_bundle_files(dir, m,
                                            {{"forward", sp.forward}, {"backward", sp.backward},
                                             {"weight", sp.weight}, {"optimizer", sp.optimizer}},
                                            weights, schedule));
      summary.node_dirs.push_back(dir);
      manifests.push_back(m);
      // A backup's bundle: the same stage, under the backup's id and address.
      if (auto b = backups.find({c, sp.stage}); b != backups.end()) {
        rt::Manifest bm = m;
        bm.backup_of = m.self;
        bm.self = b->second;
        const std::string backup_dir = (fs::path(options.out_dir) / bm.self.id).string();
        RN_RETURN_IF_ERROR(write_bundle_files(backup_dir, bm,
                                              {{"forward", sp.forward}, {"backward", sp.backward},
                                               {"weight", sp.weight}, {"optimizer", sp.optimizer}},
                                              weights, schedule));
        summary.node_dirs.push_back(backup_dir);
        manifests.push_back(bm);
        r.notes.push_back("backup: " + bm.self.id + " at " + bm.self.host + ":" + std::to_string(bm.self.port) +
                          " shadows this stage and takes it over if " + m.self.id + " fails");
      }

      for (auto& send : r.sends) send.name += " -> " + node_id(index + 1);
      r.notes.push_back("stash per micro-batch: " + std::to_string(sp.stash.size()) + " values; schedule: " +
                        std::to_string(schedule.instrs.size()) + " instructions");
      for (const rt::RingSpec& ring : m.rings) {
        std::string line = "averaging ring " + std::to_string(ring.tag) + ": " + std::to_string(ring.size()) +
                           " elements with";
        for (const auto& member : ring.members)
          if (member != m.self.id) line += " " + member;
        r.notes.push_back(line);
      }
    }
    rep.clusters.push_back(std::move(cl.report));
  }
  // The run id ties the bundles of one compile together: nodes of different compiles refuse to talk to each
  // other, and a checkpoint of another compile is refused. It is a digest of every manifest (which holds the
  // digest of every other file of its bundle, so every weight byte and every program) and of the options
  // below: two compiles share it only when they wrote the same bundles (docs/bundle-format.md).
  std::ostringstream fingerprint;
  fingerprint << options.batch << "|" << options.microbatches << "|" << options.schedule << "|"
              << options.training.mode << "|" << options.training.seed << "|" << options.training.optimizer.lr << "|"
              << options.training.average_every;
  for (int k : cluster_stages) fingerprint << "|" << k;
  for (int i = 0; i < total_nodes; ++i)
    fingerprint << "|" << node_machine[static_cast<size_t>(i)] << "@" << address(i).host << ":" << address(i).port;
  for (const rt::Manifest& m : manifests) fingerprint << "\n" << rt::manifest_to_json(m).dump();
  summary.run_id = sha256_hex(fingerprint.str()).substr(0, 16);
  for (size_t i = 0; i < manifests.size(); ++i) {
    manifests[i].run_id = summary.run_id;
    RN_RETURN_IF_ERROR(rt::write_manifest(summary.node_dirs[i], manifests[i]));
  }

  std::ostringstream header;
  header << "model: " << options.model_path << "\n"
         << "run id: " << summary.run_id << "\n"
         << "clusters: " << num_clusters << ", batch " << options.batch << " = " << options.microbatches
         << " micro-batches x " << micro << ", schedule " << options.schedule << "\n";
  {
    const rt::OptimizerConfig& o = options.training.optimizer;
    header << "optimizer: " << o.type << ", lr " << o.lr << " (" << o.lr_schedule;
    if (o.warmup_steps > 0) header << ", " << o.warmup_steps << " warm-up updates";
    header << ")";
    if (o.clip_norm > 0) header << ", gradients clipped to global norm " << o.clip_norm;
    header << "\n";
  }
  if (options.training.compression.activations.codec != rt::Codec::kRaw ||
      options.training.compression.gradients.codec != rt::Codec::kRaw)
    header << "compression: activations " << rt::codec_spec_str(options.training.compression.activations)
           << ", gradients " << rt::codec_spec_str(options.training.compression.gradients) << "\n";
  if (num_clusters > 1 && local_steps.empty()) {
    header << "averaging every " << options.training.average_every << " steps over " << rings.size() << " rings\n";
  } else if (num_clusters > 1) {
    header << "averaging over " << rings.size() << " rings after each cluster's local steps (";
    for (size_t i = 0; i < local_steps.size(); ++i) header << (i ? ", " : "") << local_steps[i];
    header << (options.local_steps.empty() ? "; from the machines' predicted step times" : "")
           << "), weighted by samples\n";
  }
  rep.header = header.str();

  const std::string text = render_report_text(rep);
  for (const auto& [name, content] : {std::pair<const char*, std::string>{"report.txt", text},
                                      std::pair<const char*, std::string>{"report.html", render_report_html(rep)}}) {
    std::ofstream out(fs::path(options.out_dir) / name, std::ios::trunc);
    out << content;
    if (!out) return error(Code::kInvalidArgument, "cannot write ", name, " in '", options.out_dir, "'");
  }
  report << text;
  summary.report = std::move(rep);
  return summary;
}

}  // namespace ravnest::cg
