#include "codegen/compile.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "codegen/schedule.h"
#include "codegen/stages.h"
#include "common/sha256.h"
#include "frontend/import.h"
#include "frontend/op_table.h"
#include "partitioner/contiguous.h"

namespace ravnest::cg {
namespace fs = std::filesystem;

namespace {

// Relative time of one node on a unit machine: training FLOPs at 100 GFLOP/s
// plus forward bytes at 10 GB/s read three times (F, B, W). Only the ratios
// between nodes matter for the split.
double node_time(const Node& node, const Graph& g) {
  const fe::OpDef* def = fe::find_op(node.domain, node.op, static_cast<int>(g.opset));
  if (!def || !def->cost) return 0;
  fe::OpCost c = def->cost(node, g);
  return (c.flops + c.backward_input_flops + c.backward_weight_flops) / 100e9 + 3 * c.bytes / 10e9;
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

}  // namespace

Result<CompileSummary> compile_model(const CompileOptions& options, std::ostream& report) {
  if (options.stages < 1) return error(Code::kInvalidArgument, "--stages must be at least 1");
  if (options.batch < 1 || options.microbatches < 1 || options.batch % options.microbatches != 0)
    return error(Code::kInvalidArgument, "--batch ", options.batch, " must be a positive multiple of --microbatches ",
                 options.microbatches);
  const int64_t micro = options.batch / options.microbatches;
  if (options.base_port < 1 || options.base_port + options.stages > 65535)
    return error(Code::kInvalidArgument, "--base-port ", options.base_port, " leaves no room for ", options.stages, " nodes");

  fe::ImportOptions import_options;
  import_options.shapes = options.shapes;
  import_options.batch = micro;
  RN_ASSIGN_OR_RETURN(Graph model, fe::import_model(options.model_path, import_options));

  std::vector<double> cost;
  for (const Node& n : model.nodes) cost.push_back(node_time(n, model));
  RN_ASSIGN_OR_RETURN(part::ContiguousSplit split,
                      part::split_contiguous(cost, std::vector<double>(static_cast<size_t>(options.stages), 1.0)));

  StageOptions stage_options;
  stage_options.optimizer = options.training.optimizer;
  RN_ASSIGN_OR_RETURN(std::vector<StageProgram> stages,
                      build_stage_programs(model, split.stage_of_node, options.stages, stage_options));

  // Every stage's schedule; "auto" optimises for this compile's F/B/W FLOPs per stage.
  if (options.microbatches > 65536)
    return error(Code::kInvalidArgument, "--microbatches ", options.microbatches, " is over the limit of 65536");
  ScheduleCosts schedule_costs;
  for (const StageProgram& sp : stages)
    schedule_costs.stages.push_back({sp.forward_flops, sp.backward_input_flops, sp.backward_weight_flops});
  RN_ASSIGN_OR_RETURN(std::vector<rt::StageSchedule> schedules,
                      make_schedules(options.schedule, options.stages, static_cast<int>(options.microbatches),
                                     schedule_costs));

  // The run id ties the bundles of one compile together: nodes of different
  // compiles refuse to talk to each other.
  std::ostringstream fingerprint;
  RN_ASSIGN_OR_RETURN(std::string model_digest, sha256_file(options.model_path));
  fingerprint << model_digest << "|" << options.stages << "|" << options.batch << "|" << options.microbatches << "|"
              << options.schedule << "|" << options.training.mode << "|" << options.training.seed << "|" << options.training.optimizer.lr;
  CompileSummary summary;
  summary.stages = options.stages;
  summary.run_id = sha256_hex(fingerprint.str()).substr(0, 16);

  auto node_id = [](int s) { return "node" + std::to_string(s); };
  auto address = [&](int s) {
    return rt::PeerAddress{node_id(s), options.host, static_cast<uint16_t>(options.base_port + s)};
  };
  std::ostringstream text;
  text << "Ravnest compile report\n"
       << "model: " << options.model_path << "\n"
       << "run id: " << summary.run_id << "\n"
       << "stages: " << options.stages << ", batch " << options.batch << " = " << options.microbatches
       << " micro-batches x " << micro << ", schedule " << options.schedule << "\n\n";
  for (const StageProgram& sp : stages) {
    rt::Manifest m;
    m.run_id = summary.run_id;
    m.model = fs::path(options.model_path).filename().string();
    m.self = address(sp.stage);
    m.stage = sp.stage;
    m.num_stages = options.stages;
    if (sp.stage > 0) m.prev = address(sp.stage - 1);
    if (sp.stage + 1 < options.stages) m.next = address(sp.stage + 1);
    m.training = options.training;
    m.training.batch = options.batch;
    m.training.microbatches = options.microbatches;
    m.training.microbatch_size = micro;
    m.recv = sp.recv;
    m.send = sp.send;
    m.data_input = sp.data_input;
    m.labels_input = sp.labels_input;
    m.loss_output = sp.loss_output;
    m.logits_output = sp.logits_output;
    m.params = sp.params;
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
    const rt::StageSchedule& schedule = schedules[static_cast<size_t>(sp.stage)];
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
         << "  FLOPs per micro-batch: F " << human(sp.forward_flops, "") << ", B " << human(sp.backward_input_flops, "")
         << ", W " << human(sp.backward_weight_flops, "") << "\n"
         << "  predicted share of the step: " << std::fixed << std::setprecision(1)
         << (split.bottleneck > 0 ? 100.0 * split.stage_cost[sp.stage] / split.bottleneck : 100.0) << "% of the slowest stage\n";
    for (const auto& t : sp.send)
      text << "  sends " << t.name << " " << shape_str(t.shape) << " " << dtype_name(t.dtype) << " ("
           << human(static_cast<double>(numel(t.shape) * static_cast<int64_t>(dtype_size(t.dtype))), "B")
           << " per micro-batch) to node" << sp.stage + 1 << "\n";
    text << "  stash per micro-batch: " << sp.stash.size() << " values; schedule: " << schedule.instrs.size()
         << " instructions\n";
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
