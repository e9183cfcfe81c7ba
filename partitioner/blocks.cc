// LLM-aware splitting: single-tensor cut points, repeated blocks, partitioning at block
// boundaries, tied parameters. See blocks.h for the guarantees.
#include "partitioner/blocks.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace ravnest::part {
namespace {

double value_bytes(const Graph& g, const std::string& name) {
  const ValueInfo* info = g.find_value(name);
  if (!info || !info->is_static()) return 0;
  return static_cast<double>(numel(info->static_shape())) * static_cast<double>(dtype_size(info->dtype));
}

bool is_float_value(const Graph& g, const std::string& name) {
  const ValueInfo* info = g.find_value(name);
  return info && (info->dtype == DType::kF32 || info->dtype == DType::kF16 || info->dtype == DType::kBF16 ||
                  info->dtype == DType::kF64);
}

// Nodes that read (transitively) only initializers: constants the frontend did not fold.
std::vector<char> constant_only_nodes(const Graph& g) {
  std::unordered_set<std::string> constant_values;
  std::vector<char> constant(g.nodes.size(), 0);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    bool only = true;
    for (const std::string& in : g.nodes[i].inputs)
      if (!in.empty() && !g.is_initializer(in) && !constant_values.count(in)) only = false;
    if (!only) continue;
    constant[i] = 1;
    for (const std::string& out : g.nodes[i].outputs)
      if (!out.empty()) constant_values.insert(out);
  }
  return constant;
}

std::string signature_of(const Graph& g, const std::vector<int>& order, int begin, int end) {
  std::map<std::string, int> ops;
  for (int p = begin; p < end; ++p) ++ops[g.nodes[static_cast<size_t>(order[static_cast<size_t>(p)])].op];
  std::string sig;
  for (const auto& [op, count] : ops) {
    if (!sig.empty()) sig += ", ";
    sig += count > 1 ? str_cat(op, " x", count) : op;
  }
  return sig;
}

// Longest repetition of the segment signatures: period p, start o, r >= 2 copies,
// maximising r * p (ties: smaller p, then earlier o).
void find_repetition(BlockStructure& b) {
  const int m = static_cast<int>(b.segments.size());
  int best_cover = 0;
  for (int p = 1; p <= std::min(m / 2, 64); ++p) {
    // Runs of i with sig[i] == sig[i + p]: a run of length L from i gives L + p
    // segments with period p, i.e. floor((L + p) / p) copies.
    int i = 0;
    while (i + p < m) {
      if (b.segments[static_cast<size_t>(i)].signature != b.segments[static_cast<size_t>(i + p)].signature) {
        ++i;
        continue;
      }
      int j = i;
      while (j + p < m && b.segments[static_cast<size_t>(j)].signature == b.segments[static_cast<size_t>(j + p)].signature) ++j;
      const int copies = (j - i + p) / p;
      if (copies >= 2 && copies * p > best_cover) {
        best_cover = copies * p;
        b.period = p;
        b.first_block = i;
        b.num_blocks = copies;
      }
      i = j;
    }
  }
  if (b.period == 0) return;
  const int n = static_cast<int>(b.order.size());
  for (int t = 0; t <= b.num_blocks; ++t) {
    int seg = b.first_block + t * b.period;
    int pos = seg < m ? b.segments[static_cast<size_t>(seg)].begin : n;
    if (pos > 0 && pos < n) b.boundaries.push_back(pos);
  }
}

}  // namespace

Result<WeightedDag> dag_from_graph(const Graph& g, const ModelCostOptions& options) {
  WeightedDag dag;
  const size_t n = g.nodes.size();
  dag.compute.assign(n, 0);
  dag.memory.assign(n, 0);
  dag.activation.assign(n, 0);
  dag.names.resize(n);
  std::unordered_map<std::string, int> producer;
  std::unordered_set<std::string> charged;
  std::unordered_map<std::string, std::vector<int>> readers;
  for (size_t i = 0; i < n; ++i) {
    const Node& node = g.nodes[i];
    dag.names[i] = node.name;
    const fe::OpDef* def = fe::find_op(node.domain, node.op, static_cast<int>(g.opset));
    if (!def)
      return error(Code::kUnsupported, node.describe(), ": op ", node.domain.empty() ? "" : node.domain + ".", node.op,
                   " at opset ", g.opset, " is not in the op table, so its cost is unknown");
    fe::OpCost cost = def->cost ? def->cost(node, g) : fe::OpCost{};
    dag.compute[i] = options.node_work ? options.node_work(node, cost)
                                       : cost.flops + cost.backward_input_flops + cost.backward_weight_flops;
    for (const std::string& in : node.inputs) {
      if (in.empty()) continue;
      const bool param = g.parameters.count(in) != 0;
      if (param && charged.insert(in).second) dag.memory[i] += value_bytes(g, in) * options.parameter_state_factor;
      auto it = producer.find(in);
      if (it != producer.end()) {
        auto& r = readers[in];
        if (r.empty() || r.back() != static_cast<int>(i)) r.push_back(static_cast<int>(i));
      }
    }
    for (const std::string& out : node.outputs) {
      if (out.empty()) continue;
      producer[out] = static_cast<int>(i);
      if (is_float_value(g, out)) dag.activation[i] += value_bytes(g, out);
    }
  }
  for (size_t i = 0; i < n; ++i)
    for (const std::string& out : g.nodes[i].outputs) {
      auto it = readers.find(out);
      if (out.empty() || it == readers.end()) continue;
      dag.tensors.push_back({static_cast<int>(i), it->second, value_bytes(g, out) * (is_float_value(g, out) ? 2 : 1)});
    }
  return dag;
}

Result<BlockStructure> find_blocks(const Graph& g) {
  BlockStructure b;
  const size_t n = g.nodes.size();
  if (n == 0) return error(Code::kInvalidArgument, "graph '", g.name, "' has no nodes to split");
  // The work order: graph order, with each constant-only node emitted just before its
  // first reader (so a constant computed early does not cross every cut).
  const std::vector<char> constant = constant_only_nodes(g);
  std::unordered_map<std::string, int> producer;
  for (size_t i = 0; i < n; ++i)
    for (const std::string& out : g.nodes[i].outputs)
      if (!out.empty()) producer[out] = static_cast<int>(i);
  std::vector<char> emitted(n, 0);
  std::function<void(int)> emit = [&](int v) {
    if (emitted[static_cast<size_t>(v)]) return;
    emitted[static_cast<size_t>(v)] = 1;
    for (const std::string& in : g.nodes[static_cast<size_t>(v)].inputs) {
      auto it = producer.find(in);
      if (it != producer.end() && constant[static_cast<size_t>(it->second)]) emit(it->second);
    }
    b.order.push_back(v);
  };
  for (size_t i = 0; i < n; ++i)
    if (!constant[i]) emit(static_cast<int>(i));
  for (size_t i = 0; i < n; ++i) emit(static_cast<int>(i));  // constants nobody reads: at the end
  std::vector<int> pos(n);
  for (size_t p = 0; p < n; ++p) pos[static_cast<size_t>(b.order[p])] = static_cast<int>(p);

  // Activation values: outputs of non-constant nodes. Each crosses the cuts between its
  // producer and its last reader (a graph output is read at the end).
  std::unordered_map<std::string, int> last_read;
  for (size_t i = 0; i < n; ++i)
    for (const std::string& in : g.nodes[i].inputs) {
      auto it = producer.find(in);
      if (!in.empty() && it != producer.end() && !constant[static_cast<size_t>(it->second)])
        last_read[in] = std::max(last_read[in], pos[i]);
    }
  for (const std::string& out : g.outputs)
    if (producer.count(out) && !constant[static_cast<size_t>(producer[out])]) last_read[out] = static_cast<int>(n);
  // crossing[c] for cut c (before position c), as a count and an XOR-free witness: the
  // sum of ids lets us name the value when the count is one.
  std::vector<int> count(n + 2, 0);
  std::vector<long long> id_sum(n + 2, 0);
  std::vector<std::string> names;
  for (const auto& [value, last] : last_read) {
    int p = pos[static_cast<size_t>(producer[value])];
    if (last <= p) continue;
    long long id = static_cast<long long>(names.size());
    names.push_back(value);
    count[static_cast<size_t>(p + 1)] += 1;
    count[static_cast<size_t>(last + 1)] -= 1;
    id_sum[static_cast<size_t>(p + 1)] += id;
    id_sum[static_cast<size_t>(last + 1)] -= id;
  }
  int run = 0;
  long long ids = 0;
  for (size_t c = 0; c <= n; ++c) {
    run += count[c];
    ids += id_sum[c];
    if (c >= 1 && c < n && run == 1) b.cuts.push_back({static_cast<int>(c), names[static_cast<size_t>(ids)]});
  }
  int begin = 0;
  for (size_t i = 0; i <= b.cuts.size(); ++i) {
    int end = i < b.cuts.size() ? b.cuts[i].position : static_cast<int>(n);
    b.segments.push_back({begin, end, signature_of(g, b.order, begin, end)});
    begin = end;
  }
  find_repetition(b);
  return b;
}

std::vector<TiedParameter> find_tied_parameters(const Graph& g, const std::vector<int>& stage_of_node) {
  std::map<std::string, TiedParameter> by_name;
  for (size_t i = 0; i < g.nodes.size() && i < stage_of_node.size(); ++i)
    for (const std::string& in : g.nodes[i].inputs) {
      if (in.empty() || !g.parameters.count(in)) continue;
      TiedParameter& t = by_name[in];
      t.name = in;
      t.stages.push_back(stage_of_node[i]);
      t.readers.push_back(g.nodes[i].name);
    }
  std::vector<TiedParameter> out;
  for (auto& [name, t] : by_name) {
    std::sort(t.stages.begin(), t.stages.end());
    t.stages.erase(std::unique(t.stages.begin(), t.stages.end()), t.stages.end());
    if (t.stages.size() > 1) out.push_back(std::move(t));
  }
  return out;
}

Result<BlockPartition> partition_by_blocks(const Graph& g, const Pipeline& pipeline, const ModelCostOptions& options) {
  BlockPartition out;
  RN_ASSIGN_OR_RETURN(out.blocks, find_blocks(g));
  RN_ASSIGN_OR_RETURN(WeightedDag dag, dag_from_graph(g, options));
  const size_t k = pipeline.machines.size();
  const BlockStructure& b = out.blocks;
  // Allowed cuts: block boundaries; when there are too few units for the stages, every
  // single-tensor cut point.
  std::vector<int> cuts = b.boundaries;
  std::string method = str_cat("blocks (", b.num_blocks, " x ", b.period, " segments)");
  if (cuts.size() + 1 < k) {
    cuts.clear();
    for (const CutPoint& c : b.cuts) cuts.push_back(c.position);
    method = str_cat("single-tensor cuts (", b.period == 0 ? "no repeated blocks" : "too few blocks", ")");
  }
  if (cuts.size() + 1 < k)
    return error(Code::kInvalidArgument, "graph '", g.name, "' has only ", cuts.size() + 1,
                 " units between single-tensor cut points; use at most ", cuts.size() + 1,
                 " stages, or the general DAG partitioner");
  // The chain of units: unit u spans positions [start[u], start[u+1]).
  std::vector<int> start = {0};
  start.insert(start.end(), cuts.begin(), cuts.end());
  const size_t units = start.size();
  start.push_back(static_cast<int>(b.order.size()));
  std::vector<int> unit_of_node(g.nodes.size(), 0);
  WeightedDag chain;
  chain.compute.assign(units, 0);
  chain.memory.assign(units, 0);
  chain.activation.assign(units, 0);
  for (size_t u = 0; u < units; ++u)
    for (int p = start[u]; p < start[u + 1]; ++p) {
      size_t v = static_cast<size_t>(b.order[static_cast<size_t>(p)]);
      unit_of_node[v] = static_cast<int>(u);
      chain.compute[u] += dag.compute[v];
      chain.memory[u] += dag.memory[v];
      chain.activation[u] += dag.activation[v];
    }
  // Bytes crossing from unit to unit: the node DAG's tensors, by unit span.
  std::vector<double> link(units, 0);
  for (const DagTensor& t : dag.tensors) {
    int a = unit_of_node[static_cast<size_t>(t.producer)], m = a;
    for (int c : t.consumers) m = std::max(m, unit_of_node[static_cast<size_t>(c)]);
    for (int u = a; u < m; ++u) link[static_cast<size_t>(u)] += t.bytes;
  }
  for (size_t u = 0; u + 1 < units; ++u) chain.tensors.push_back({static_cast<int>(u), {static_cast<int>(u + 1)}, link[u]});
  RN_ASSIGN_OR_RETURN(DagPartition unit_split, partition_chain_dp(chain, pipeline));
  std::vector<int> stage(g.nodes.size());
  for (size_t v = 0; v < stage.size(); ++v) stage[v] = unit_split.stage_of_node[static_cast<size_t>(unit_of_node[v])];
  RN_ASSIGN_OR_RETURN(out.partition, evaluate_partition(dag, pipeline, std::move(stage), method + " + chain-dp"));
  out.tied = find_tied_parameters(g, out.partition.stage_of_node);
  return out;
}

Result<std::pair<Graph, std::vector<int>>> order_by_stage(const Graph& g, const std::vector<int>& stage_of_node) {
  if (stage_of_node.size() != g.nodes.size())
    return error(Code::kInvalidArgument, "the assignment covers ", stage_of_node.size(), " of ", g.nodes.size(), " nodes");
  std::vector<size_t> idx(g.nodes.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return stage_of_node[a] < stage_of_node[b]; });
  Graph out = g;
  std::vector<int> stages;
  for (size_t i = 0; i < idx.size(); ++i) {
    out.nodes[i] = g.nodes[idx[i]];
    stages.push_back(stage_of_node[idx[i]]);
  }
  RN_RETURN_IF_ERROR(out.validate().with_context("the stage assignment is not a pipeline order"));
  return std::make_pair(std::move(out), std::move(stages));
}

}  // namespace ravnest::part
