// The executor: validates a static stage program, builds one kernel per node, plans
// the intermediate-value arena and runs the kernels in program order.
//
// Guarantees (besides those of executor.h): every value a node touches has a known
// dtype and static shape, or create() fails naming the node and value; initializers
// become constant tensors owned by the executor; the output of Reshape, Flatten or
// Identity whose input and output are both intermediates aliases its input's
// storage, and the live interval of the storage's root buffer covers every reader
// of every alias; graph inputs, graph outputs and constants are never in the arena.
#include "runtime/executor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>

#include "common/log.h"
#include "runtime/memory_plan.h"

namespace ravnest::rt {
namespace {

enum class Role { kInput, kConstant, kIntermediate, kOutput };

struct Slot {
  ValueInfo info;
  Role role = Role::kIntermediate;
  int producer = -1;   // node index, -1 for inputs/constants
  int alias_of = -1;   // slot whose storage this one shares (root), or -1
  Tensor tensor;
};

bool is_alias_op(const Node& node) {
  return node.domain.empty() && (node.op == "Reshape" || node.op == "Flatten" || node.op == "Identity");
}

class CpuExecutor final : public Executor {
 public:
  explicit CpuExecutor(Graph program) : program_(std::move(program)) {
    const char* env = std::getenv("RAVNEST_PROFILE_OPS");
    profile_ = env && *env && std::string(env) != "0";
  }
  ~CpuExecutor() override { report_profile(); }

  Status init(const KernelRegistry& registry, const ExecutorOptions& options);
  Status run(const TensorMap& feeds, TensorMap* outputs, const RunContext& context) override;
  const Graph& program() const override { return program_; }
  size_t arena_bytes() const override { return arena_bytes_; }
  size_t unplanned_bytes() const override { return unplanned_bytes_; }
  std::vector<std::string> chosen_kernels() const override { return chosen_; }

 private:
  Result<int> add_slot(const std::string& name, const Node* reader);
  Status plan_arena();
  void report_profile() const;

  Graph program_;
  std::vector<Slot> slots_;
  std::unordered_map<std::string, int> slot_of_;
  std::vector<std::unique_ptr<Kernel>> kernels_;
  std::vector<std::vector<Tensor*>> node_inputs_, node_outputs_;
  std::vector<std::string> chosen_;
  std::vector<int> input_slots_, output_slots_;
  Tensor arena_;
  size_t arena_bytes_ = 0, unplanned_bytes_ = 0;
  // RAVNEST_PROFILE_OPS: seconds spent in each node's kernel over all runs but the first
  // (kernel set-up, first touch of memory), the runs counted, and the first run's seconds.
  bool profile_ = false;
  std::vector<double> node_seconds_;
  int64_t runs_ = 0;
  double first_run_seconds_ = 0;
};

// Logs the time per op type (and the kernel chosen) summed over all runs but the first, slowest first.
void CpuExecutor::report_profile() const {
  if (!profile_ || runs_ == 0) return;
  struct Row {
    double seconds = 0;
    int64_t nodes = 0;
  };
  std::map<std::string, Row> by_op;
  double total = 0;
  for (size_t i = 0; i < node_seconds_.size(); ++i) {
    Row& row = by_op[program_.nodes[i].op + " [" + chosen_[i] + "]"];
    row.seconds += node_seconds_[i];
    ++row.nodes;
    total += node_seconds_[i];
  }
  std::vector<std::pair<std::string, Row>> rows(by_op.begin(), by_op.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  std::string text = "op profile of program '" + program_.name + "' over " + std::to_string(runs_) +
                     " runs after the first (" + std::to_string(first_run_seconds_ * 1e3) +
                     " ms): " + std::to_string(total * 1e3 / static_cast<double>(runs_)) + " ms per run";
  for (const auto& [op, row] : rows) {
    char line[256];
    std::snprintf(line, sizeof line, "\n  %9.3f ms/run %5.1f%%  %3lld nodes  %s",
                  row.seconds * 1e3 / static_cast<double>(runs_), total > 0 ? 100.0 * row.seconds / total : 0.0,
                  static_cast<long long>(row.nodes), op.c_str());
    text += line;
  }
  RN_LOG_INFO(text);
}

// Registers a value (once) with its type; the error names the value and who reads it.
Result<int> CpuExecutor::add_slot(const std::string& name, const Node* reader) {
  auto found = slot_of_.find(name);
  if (found != slot_of_.end()) return found->second;
  Slot slot;
  const std::string where = reader ? " (used by " + reader->describe() + ")" : "";
  auto init = program_.initializers.find(name);
  if (init != program_.initializers.end()) {
    const TensorData& data = init->second;
    RN_ASSIGN_OR_RETURN(int64_t count, checked_numel(data.shape));
    if (dtype_size(data.dtype) == 0 || data.bytes.size() != static_cast<size_t>(count) * dtype_size(data.dtype))
      return error(Code::kInvalidArgument, "program '", program_.name, "': initializer '", name, "'", where, " holds ",
                   data.bytes.size(), " bytes, ", dtype_name(data.dtype), "[", shape_str(data.shape), "] needs ",
                   count * static_cast<int64_t>(dtype_size(data.dtype)));
    slot.info = ValueInfo::of(name, data.dtype, data.shape);
    slot.role = Role::kConstant;
    slot.tensor = Tensor::empty(data.dtype, data.shape);
    if (!data.bytes.empty()) std::memcpy(slot.tensor.raw(), data.bytes.data(), data.bytes.size());
  } else {
    const ValueInfo* info = program_.find_value(name);
    if (!info) return error(Code::kInvalidArgument, "program '", program_.name, "': value '", name, "'", where,
                            " has no type; the compiler must record every value");
    if (!info->is_static() || dtype_size(info->dtype) == 0)
      return error(Code::kInvalidArgument, "program '", program_.name, "': value '", name, "'", where, " is ",
                   dtype_name(info->dtype), "[", info->shape_string(),
                   "]; the runtime needs a known dtype and static shape for every value");
    RN_ASSIGN_OR_RETURN(int64_t count, checked_numel(info->static_shape()));
    (void)count;
    slot.info = *info;
    slot.info.name = name;
  }
  slots_.push_back(std::move(slot));
  const int id = static_cast<int>(slots_.size()) - 1;
  slot_of_[name] = id;
  return id;
}

Status CpuExecutor::init(const KernelRegistry& registry, const ExecutorOptions& options) {
  RN_RETURN_IF_ERROR(program_.validate());
  for (const std::string& name : program_.inputs) {
    if (program_.is_initializer(name)) continue;
    RN_ASSIGN_OR_RETURN(int id, add_slot(name, nullptr));
    slots_[id].role = Role::kInput;
    input_slots_.push_back(id);
  }
  for (const auto& [name, data] : program_.initializers) RN_RETURN_IF_ERROR(add_slot(name, nullptr).status());

  const int n_nodes = static_cast<int>(program_.nodes.size());
  std::vector<std::vector<int>> in_ids(n_nodes), out_ids(n_nodes);
  for (int i = 0; i < n_nodes; ++i) {
    const Node& node = program_.nodes[i];
    KernelRequest request;
    request.node = &node;
    request.device = options.device;
    for (const std::string& name : node.inputs) {
      int id = -1;
      if (!name.empty()) {
        RN_ASSIGN_OR_RETURN(id, add_slot(name, &node));
      }
      in_ids[i].push_back(id);
      request.inputs.push_back(id < 0 ? ValueInfo{} : slots_[id].info);
    }
    for (const std::string& name : node.outputs) {
      int id = -1;
      if (!name.empty()) {
        RN_ASSIGN_OR_RETURN(id, add_slot(name, &node));
        slots_[id].producer = i;
      }
      out_ids[i].push_back(id);
      request.outputs.push_back(id < 0 ? ValueInfo{} : slots_[id].info);
    }
    std::string impl;
    RN_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel, registry.build(request, &impl));
    kernels_.push_back(std::move(kernel));
    chosen_.push_back(impl);
  }
  for (const std::string& name : program_.outputs) {
    RN_ASSIGN_OR_RETURN(int id, add_slot(name, nullptr));
    if (slots_[id].role == Role::kIntermediate) slots_[id].role = Role::kOutput;
    output_slots_.push_back(id);
  }
  // Aliases: a shape op between two intermediates shares its input's storage.
  for (int i = 0; i < n_nodes; ++i) {
    if (!is_alias_op(program_.nodes[i]) || in_ids[i].empty() || out_ids[i].size() != 1) continue;
    const int src = in_ids[i][0], dst = out_ids[i][0];
    if (src < 0 || dst < 0 || slots_[src].role != Role::kIntermediate || slots_[dst].role != Role::kIntermediate)
      continue;
    if (slots_[src].info.dtype != slots_[dst].info.dtype) continue;
    slots_[dst].alias_of = slots_[src].alias_of >= 0 ? slots_[src].alias_of : src;
  }
  RN_RETURN_IF_ERROR(plan_arena());
  for (int i = 0; i < n_nodes; ++i) {
    std::vector<Tensor*> ins, outs;
    for (int id : in_ids[i]) ins.push_back(id < 0 ? nullptr : &slots_[id].tensor);
    for (int id : out_ids[i]) outs.push_back(id < 0 ? nullptr : &slots_[id].tensor);
    node_inputs_.push_back(std::move(ins));
    node_outputs_.push_back(std::move(outs));
  }
  return ok_status();
}

Status CpuExecutor::plan_arena() {
  // Live interval per root buffer: from its producer to the last reader of it or any alias.
  std::vector<int> last_read(slots_.size(), -1);
  for (int i = 0; i < static_cast<int>(program_.nodes.size()); ++i)
    for (const std::string& name : program_.nodes[i].inputs)
      if (!name.empty()) last_read[slot_of_.at(name)] = i;
  std::vector<int> buffer_of(slots_.size(), -1);
  std::vector<BufferLife> lives;
  for (size_t id = 0; id < slots_.size(); ++id) {
    const Slot& slot = slots_[id];
    if (slot.role != Role::kIntermediate || slot.alias_of >= 0) continue;
    buffer_of[id] = static_cast<int>(lives.size());
    const size_t bytes = static_cast<size_t>(numel(slot.info.static_shape())) * dtype_size(slot.info.dtype);
    lives.push_back({bytes, slot.producer, std::max(slot.producer, last_read[id])});
  }
  for (size_t id = 0; id < slots_.size(); ++id) {
    if (slots_[id].alias_of < 0) continue;
    BufferLife& root = lives[buffer_of[slots_[id].alias_of]];
    root.last = std::max({root.last, last_read[id], slots_[id].producer});
  }
  const MemoryPlan plan = plan_memory(lives);
  arena_bytes_ = plan.arena_bytes;
  unplanned_bytes_ = plan.unplanned_bytes;
  arena_ = Tensor::empty(DType::kU8, {static_cast<int64_t>(arena_bytes_)});
  auto* base = static_cast<uint8_t*>(arena_.raw());
  for (size_t id = 0; id < slots_.size(); ++id)
    if (buffer_of[id] >= 0)
      slots_[id].tensor = Tensor::view(slots_[id].info.dtype, slots_[id].info.static_shape(),
                                       base + plan.offsets[buffer_of[id]]);
  for (Slot& slot : slots_)
    if (slot.alias_of >= 0) slot.tensor = slots_[slot.alias_of].tensor.reshaped(slot.info.static_shape());
  RN_VERBOSE("memory plan for '", program_.name, "': ", lives.size(), " buffers, arena ", arena_bytes_,
             " bytes (", unplanned_bytes_, " without reuse)");
  return ok_status();
}

Status CpuExecutor::run(const TensorMap& feeds, TensorMap* outputs, const RunContext& context) {
  for (const auto& [name, tensor] : feeds) {
    auto found = slot_of_.find(name);
    if (found == slot_of_.end() || slots_[found->second].role != Role::kInput)
      return error(Code::kInvalidArgument, "program '", program_.name, "': feed '", name,
                   "' is not an input of the program");
  }
  for (int id : input_slots_) {
    Slot& slot = slots_[id];
    auto feed = feeds.find(slot.info.name);
    if (feed == feeds.end())
      return error(Code::kInvalidArgument, "program '", program_.name, "': input '", slot.info.name,
                   "' is not fed (expected ", dtype_name(slot.info.dtype), "[", slot.info.shape_string(), "])");
    const Tensor& t = feed->second;
    if (t.dtype() != slot.info.dtype || t.shape() != slot.info.static_shape() || !t.defined())
      return error(Code::kInvalidArgument, "program '", program_.name, "': input '", slot.info.name, "' expects ",
                   dtype_name(slot.info.dtype), "[", slot.info.shape_string(), "], given ", dtype_name(t.dtype()),
                   "[", shape_str(t.shape()), "]");
    slot.tensor = t;
  }
  for (int id : output_slots_)
    if (slots_[id].role == Role::kOutput)
      slots_[id].tensor = Tensor::empty(slots_[id].info.dtype, slots_[id].info.static_shape());
  Status status;
  const bool first_run = node_seconds_.empty();
  if (profile_) node_seconds_.resize(kernels_.size(), 0.0), runs_ += first_run ? 0 : 1;
  for (size_t i = 0; i < kernels_.size() && status.ok(); ++i) {
    const auto start = profile_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    status = kernels_[i]->run(node_inputs_[i], node_outputs_[i], context);
    if (profile_) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      (first_run ? first_run_seconds_ : node_seconds_[i]) += seconds;
    }
    if (!status.ok()) status = status.with_context("running " + program_.nodes[i].describe());
  }
  if (status.ok()) {
    for (int id : output_slots_) {
      const Slot& slot = slots_[id];
      (*outputs)[slot.info.name] = slot.role == Role::kOutput ? slot.tensor : slot.tensor.clone();
    }
  }
  // Drop references to the caller's inputs and to the outputs handed out.
  for (int id : input_slots_) slots_[id].tensor = Tensor();
  for (int id : output_slots_)
    if (slots_[id].role == Role::kOutput) slots_[id].tensor = Tensor();
  return status;
}

}  // namespace

Result<std::unique_ptr<Executor>> Executor::create(Graph program, const KernelRegistry& registry,
                                                   ExecutorOptions options) {
  auto executor = std::make_unique<CpuExecutor>(std::move(program));
  RN_RETURN_IF_ERROR(executor->init(registry, options).with_context("loading program '" +
                                                                     executor->program().name + "'"));
  return std::unique_ptr<Executor>(std::move(executor));
}

Result<TensorMap> gather_feeds(const Graph& program, std::initializer_list<const TensorMap*> sources) {
  TensorMap feeds;
  for (const std::string& name : program.inputs) {
    const Tensor* found = nullptr;
    for (const TensorMap* src : sources) {
      auto it = src->find(name);
      if (it != src->end()) {
        found = &it->second;
        break;
      }
    }
    if (!found) return error(Code::kInternal, "program '", program.name, "' needs '", name, "', which this node does not hold");
    feeds[name] = *found;
  }
  return feeds;
}

}  // namespace ravnest::rt
