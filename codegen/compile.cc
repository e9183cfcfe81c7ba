#include "codegen/compile.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>

#include "codegen/ring_plan.h"
#include "codegen/schedule.h"
#include "codegen/stages.h"
#include "common/sha256.h"
#include "frontend/import.h"
#include "frontend/op_table.h"
#include "partitioner/blocks.h"
#include "partitioner/dag_partition.h"

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
// takes it), and the predicted time per stage.
struct ClusterSplit {
  Graph graph;
  std::vector<int> stage_of_node;
  std::vector<double> stage_time;
  double bottleneck = 0;
  std::string method;
};

// Splits `model` over k machines of equal speed joined by kLinkBytesPerS links
// (docs/partitioning.md): a transformer (repeated blocks, at least k of them) is
// cut only at block boundaries; any other graph goes to the DAG partitioner
// (METIS with acyclic refinement, checked against an exact order DP).
Result<ClusterSplit> split_cluster(const Graph& model, int k) {
  ClusterSplit split;
  if (k == 1) {
    split.graph = model;
    split.stage_of_node.assign(model.nodes.size(), 0);
    double total = 0;
    for (const Node& n : model.nodes) total += node_time(n, model);
    split.stage_time = {total};
    split.bottleneck = total;
    split.method = "one stage";
    return split;
  }
  part::Pipeline pipeline;
  for (int s = 0; s < k; ++s) pipeline.machines.push_back(part::Machine{"stage" + std::to_string(s), 1.0, 0, 1});
  pipeline.link_bandwidth.assign(static_cast<size_t>(k - 1), kLinkBytesPerS);
  part::ModelCostOptions cost;
  cost.node_work = [&](const Node& n, const fe::OpCost&) { return node_time(n, model); };
  part::DagPartition partition;
  auto blocks = part::find_blocks(model);
  if (blocks.ok() && blocks->num_blocks >= k) {
    RN_ASSIGN_OR_RETURN(part::BlockPartition bp, part::partition_by_blocks(model, pipeline, cost));
    partition = std::move(bp.partition);
    partition.method = "block boundaries (" + std::to_string(blocks->num_blocks) + " blocks), " + partition.method;
  } else {
    RN_ASSIGN_OR_RETURN(part::WeightedDag dag, part::dag_from_graph(model, cost));
    RN_ASSIGN_OR_RETURN(partition, part::partition_dag(dag, pipeline));
  }
  RN_ASSIGN_OR_RETURN(auto ordered, part::order_by_stage(model, partition.stage_of_node));
  split.graph = std::move(ordered.first);
  split.stage_of_node = std::move(ordered.second);
  split.stage_time = partition.stage_time;
  split.bottleneck = partition.bottleneck;
  split.method = partition.method;
  return split;
}

rt::Tensor to_tensor(const TensorData& d) {
  rt::Tensor t = rt::Tensor::empty(d.dtype, d.shape);
  if (!d.bytes.empty()) std::memcpy(t.raw(), d.bytes.data(), d.bytes.size());
  return t;
}

std::string human(double v, const char* unit) {
  std::ostringstream out;
  const char* prefixes[] = {"", "K", "M", "G", "T"};
  int i = 0;
  while (v >= 1000 && i < 4) {
    v /= 1000;
    ++i;
  }
  out << std::fixed << std::setprecision(v < 10 ? 2 : 1) << v << " " << prefixes[i] << unit;
  return out.str();
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

}  // namespace

Result<CompileSummary> compile_model(const CompileOptions& options, std::ostream& report) {
  const std::vector<int> cluster_stages =
      options.cluster_stages.empty() ? std::vector<int>{options.stages} : options.cluster_stages;
  int total_nodes = 0;
  for (int k : cluster_stages) {
    if (k < 1) return error(Code::kInvalidArgument, "--stages must be at least 1 per cluster");
    total_nodes += k;
  }
  if (options.batch < 1 || options.microbatches < 1 || options.batch % options.microbatches != 0)
    return error(Code::kInvalidArgument, "--batch ", options.batch, " must be a positive multiple of --microbatches ",
                 options.microbatches);
  if (options.microbatches > 65536)
    return error(Code::kInvalidArgument, "--microbatches ", options.microbatches, " is over the limit of 65536");
  const int64_t micro = options.batch / options.microbatches;
  if (options.base_port < 1 || options.base_port + total_nodes > 65535)
    return error(Code::kInvalidArgument, "--base-port ", options.base_port, " leaves no room for ", total_nodes, " nodes");
  const int num_clusters = static_cast<int>(cluster_stages.size());
  RN_RETURN_IF_ERROR(rt::validate_optimizer(options.training));
  if (num_clusters > 1 && options.training.average_every < 1)
    return error(Code::kInvalidArgument, "with ", num_clusters, " clusters, --average-every K (steps) must be >= 1");

  fe::ImportOptions import_options;
  import_options.shapes = options.shapes;
  import_options.batch = micro;
  RN_ASSIGN_OR_RETURN(Graph model, fe::import_model(options.model_path, import_options));
  rt::DataConfig data = options.training.data;
  RN_ASSIGN_OR_RETURN(data.kind, resolve_dataset(model, options.dataset));

  // Per cluster: its split, stage programs and schedules.
  struct Cluster {
    ClusterSplit split;
    std::vector<StageProgram> stages;
    std::vector<rt::StageSchedule> schedules;
    int first_node = 0;
  };
  std::vector<Cluster> clusters(static_cast<size_t>(num_clusters));
  StageOptions stage_options;
  stage_options.optimizer = options.training.optimizer;
  int next_node = 0;
  for (int c = 0; c < num_clusters; ++c) {
    Cluster& cl = clusters[static_cast<size_t>(c)];
    const int k = cluster_stages[static_cast<size_t>(c)];
    cl.first_node = next_node;
    next_node += k;
    RN_ASSIGN_OR_RETURN(cl.split, split_cluster(model, k));
    RN_ASSIGN_OR_RETURN(cl.stages, build_stage_programs(cl.split.graph, cl.split.stage_of_node, k, stage_options));
    // "auto" optimises for this cluster's predicted F/B/W seconds per stage
    // (the cost model of node_time) and a transfer time per boundary.
    ScheduleCosts schedule_costs;
    int64_t max_send = 0;
    for (const StageProgram& sp : cl.stages) {
      schedule_costs.stages.push_back({predicted_seconds(sp.forward_flops, sp.forward_bytes),
                                       predicted_seconds(sp.backward_input_flops, sp.forward_bytes),
                                       predicted_seconds(sp.backward_weight_flops, sp.forward_bytes / 2)});
      max_send = std::max(max_send, sp.send_bytes);
    }
    schedule_costs.comm = kLinkLatencyS + static_cast<double>(max_send) / kLinkBytesPerS;
    RN_ASSIGN_OR_RETURN(cl.schedules, make_schedules(options.schedule, k, static_cast<int>(options.microbatches),
                                                     schedule_costs));
  }

  auto node_id = [](int i) { return "node" + std::to_string(i); };
  auto address = [&](int i) {
    return rt::PeerAddress{node_id(i), options.host, static_cast<uint16_t>(options.base_port + i)};
  };

  std::map<std::string, int> node_index;  // node id -> global index, for ring members' addresses
  for (int i = 0; i < total_nodes; ++i) node_index[node_id(i)] = i;

  // The averaging rings: parameters in order of first use, laid end to end.
  std::vector<rt::RingSpec> rings;
  if (num_clusters > 1) {
    std::vector<std::pair<std::string, int64_t>> params;
    std::set<std::string> seen;
    for (const Node& n : model.nodes)
      for (const auto& in : n.inputs)
        if ((model.parameters.count(in) || model.state.count(in)) && seen.insert(in).second)
          params.emplace_back(in, model.initializers.at(in).numel());
    std::vector<ClusterLayout> layouts;
    for (const Cluster& cl : clusters) {
      ClusterLayout layout;
      for (const StageProgram& sp : cl.stages) {
        layout.node_ids.push_back(node_id(cl.first_node + sp.stage));
        layout.stage_params.push_back(sp.params);
        layout.stage_params.back().insert(layout.stage_params.back().end(), sp.state.begin(), sp.state.end());
      }
      layouts.push_back(std::move(layout));
    }
    RN_ASSIGN_OR_RETURN(rings, plan_rings(params, layouts));
  }

  // The run id ties the bundles of one compile together: nodes of different
  // compiles refuse to talk to each other.
  std::ostringstream fingerprint;
  RN_ASSIGN_OR_RETURN(std::string model_digest, sha256_file(options.model_path));
  fingerprint << model_digest << "|" << options.batch << "|" << options.microbatches << "|" << options.schedule << "|"
              << options.training.mode << "|" << options.training.seed << "|" << options.training.optimizer.lr << "|"
              << options.training.average_every;
  for (int k : cluster_stages) fingerprint << "|" << k;
  CompileSummary summary;
  summary.stages = total_nodes;
  summary.run_id = sha256_hex(fingerprint.str()).substr(0, 16);

  std::ostringstream text;
  text << "Ravnest compile report\n"
       << "model: " << options.model_path << "\n"
       << "run id: " << summary.run_id << "\n"
       << "clusters: " << num_clusters << ", batch " << options.batch << " = " << options.microbatches
       << " micro-batches x " << micro << ", schedule " << options.schedule << "\n";
  {
    const rt::OptimizerConfig& o = options.training.optimizer;
    text << "optimizer: " << o.type << ", lr " << o.lr << " (" << o.lr_schedule;
    if (o.warmup_steps > 0) text << ", " << o.warmup_steps << " warm-up updates";
    text << ")";
    if (o.clip_norm > 0) text << ", gradients clipped to global norm " << o.clip_norm;
    text << "\n";
  }
  if (options.training.compression.activations.codec != rt::Codec::kRaw ||
      options.training.compression.gradients.codec != rt::Codec::kRaw)
    text << "compression: activations " << rt::codec_spec_str(options.training.compression.activations)
         << ", gradients " << rt::codec_spec_str(options.training.compression.gradients) << "\n";
  if (num_clusters > 1)
    text << "averaging every " << options.training.average_every << " steps over " << rings.size() << " rings\n";
  for (int c = 0; c < num_clusters; ++c) {
    const Cluster& cl = clusters[static_cast<size_t>(c)];
    const int k = cluster_stages[static_cast<size_t>(c)];
    text << "\ncluster " << c << ": " << k << " stage(s), split by " << cl.split.method << "\n";
    for (const StageProgram& sp : cl.stages) {
      const int index = cl.first_node + sp.stage;
      rt::Manifest m;
      m.run_id = summary.run_id;
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
      m.training = options.training;
      m.training.data = data;
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
      int64_t param_count = 0;
      for (const auto& [name, data] : sp.weights) {
        weights.emplace_back(name, to_tensor(data));
        param_count += data.numel();
      }
      const rt::StageSchedule& schedule = cl.schedules[static_cast<size_t>(sp.stage)];
      std::string dir = (fs::path(options.out_dir) / m.self.id).string();
      RN_RETURN_IF_ERROR(write_bundle(dir, m,
                                      {{"forward", sp.forward}, {"backward", sp.backward},
                                       {"weight", sp.weight}, {"optimizer", sp.optimizer}},
                                      weights, schedule));
      summary.node_dirs.push_back(dir);

      text << "stage " << sp.stage << " -> " << m.self.id << " (" << m.self.host << ":" << m.self.port << ")\n"
           << "  nodes: " << sp.nodes.size() << " (";
      for (size_t i = 0; i < sp.nodes.size(); ++i) text << (i ? ", " : "") << sp.nodes[i];
      text << ")\n"
           << "  parameters: " << param_count << " (" << human(static_cast<double>(param_count) * 4, "B") << ")\n"
           << "  FLOPs per micro-batch: F " << human(sp.forward_flops, "") << ", B "
           << human(sp.backward_input_flops, "") << ", W " << human(sp.backward_weight_flops, "") << "\n"
           << "  predicted share of the step: " << std::fixed << std::setprecision(1)
           << (cl.split.bottleneck > 0 ? 100.0 * cl.split.stage_time[sp.stage] / cl.split.bottleneck : 100.0)
           << "% of the slowest stage\n";
      for (const auto& t : sp.send)
        text << "  sends " << t.name << " " << shape_str(t.shape) << " " << dtype_name(t.dtype) << " ("
             << human(static_cast<double>(numel(t.shape) * static_cast<int64_t>(dtype_size(t.dtype))), "B")
             << " per micro-batch) to " << node_id(index + 1) << "\n";
      text << "  stash per micro-batch: " << sp.stash.size() << " values; schedule: " << schedule.instrs.size()
           << " instructions\n";
      for (const rt::RingSpec& ring : m.rings) {
        text << "  averaging ring " << ring.tag << ": " << ring.size() << " elements with";
        for (const auto& member : ring.members)
          if (member != m.self.id) text << " " << member;
        text << "\n";
      }
    }
  }
  {
    std::ofstream out(fs::path(options.out_dir) / "report.txt", std::ios::trunc);
    out << text.str();
    if (!out) return error(Code::kInvalidArgument, "cannot write report.txt in '", options.out_dir, "'");
  }
  report << text.str();
  return summary;
}

}  // namespace ravnest::cg
