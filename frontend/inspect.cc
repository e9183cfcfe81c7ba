// The inspect report (see inspect.h): cost rules summed per node and per model.
#include "frontend/inspect.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "frontend/op_table.h"

namespace ravnest::fe {
namespace {

bool is_float_type(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kF16 || dtype == DType::kBF16;
}

double bytes_of(const ValueInfo& info) {
  return static_cast<double>(numel(info.static_shape())) * static_cast<double>(dtype_size(info.dtype));
}

// 1234567 -> "1,234,567".
std::string grouped(double value) {
  std::string digits = std::to_string(static_cast<long long>(std::llround(value)));
  std::string out;
  int count = 0;
  for (size_t i = digits.size(); i-- > 0;) {
    if (count && count % 3 == 0 && digits[i] != '-') out.insert(out.begin(), ',');
    out.insert(out.begin(), digits[i]);
    ++count;
  }
  return out;
}

}  // namespace

Result<InspectReport> inspect_graph(const Graph& graph) {
  InspectReport report;
  report.model = graph.name;
  for (const Node& node : graph.nodes) {
    RN_RETURN_IF_ERROR(check_op(node, graph.opset));
    const OpDef* def = find_op(node.domain, node.op, static_cast<int>(graph.opset));
    InspectRow row;
    row.name = node.name;
    row.op = node.domain.empty() ? node.op : node.domain + "." + node.op;
    for (const std::string& in : node.inputs)
      if (graph.parameters.count(in)) row.parameters += graph.initializers.at(in).numel();
    for (const std::string& out : node.outputs) {
      if (out.empty()) continue;
      const ValueInfo* info = graph.find_value(out);
      if (!info || !info->is_static())
        return error(Code::kInvalidArgument, node.describe(), ": output '", out, "' has no static shape");
      row.output_shapes.push_back(info->shape_string());
      if (is_float_type(info->dtype)) row.activation_bytes += bytes_of(*info);
    }
    OpCost cost = def->cost(node, graph);
    row.flops = cost.flops;
    row.train_flops = cost.flops + cost.backward_input_flops + cost.backward_weight_flops;
    report.flops += row.flops;
    report.train_flops += row.train_flops;
    report.activation_bytes += row.activation_bytes;
    report.rows.push_back(std::move(row));
  }
  for (const std::string& name : graph.parameters) {
    const TensorData& t = graph.initializers.at(name);
    report.parameters += t.numel();
    report.parameter_bytes += static_cast<double>(t.bytes.size());
  }
  return report;
}

std::string format_report(const InspectReport& report) {
  std::vector<std::vector<std::string>> cells;
  cells.push_back({"node", "op", "output shapes", "params", "fwd FLOPs", "train FLOPs", "act bytes"});
  for (const InspectRow& row : report.rows) {
    std::string shapes;
    for (const std::string& s : row.output_shapes) shapes += (shapes.empty() ? "" : ", ") + s;
    cells.push_back({row.name, row.op, shapes, grouped(static_cast<double>(row.parameters)), grouped(row.flops),
                     grouped(row.train_flops), grouped(row.activation_bytes)});
  }
  cells.push_back({"total: " + std::to_string(report.rows.size()) + " nodes", "", "",
                   grouped(static_cast<double>(report.parameters)), grouped(report.flops), grouped(report.train_flops),
                   grouped(report.activation_bytes)});
  std::vector<size_t> width(cells[0].size(), 0);
  for (const auto& line : cells)
    for (size_t c = 0; c < line.size(); ++c) width[c] = std::max(width[c], line[c].size());
  std::ostringstream out;
  out << "model: " << (report.model.empty() ? "(unnamed)" : report.model) << "\n";
  for (size_t r = 0; r < cells.size(); ++r) {
    for (size_t c = 0; c < cells[r].size(); ++c) {
      bool numeric = c >= 3;
      size_t pad = width[c] - cells[r][c].size();
      if (numeric) out << std::string(pad, ' ') << cells[r][c];
      else out << cells[r][c] << std::string(c + 1 < cells[r].size() ? pad : 0, ' ');
      if (c + 1 < cells[r].size()) out << "  ";
    }
    out << "\n";
  }
  out << "parameters: " << grouped(static_cast<double>(report.parameters)) << " ("
      << grouped(report.parameter_bytes) << " bytes)\n";
  out << "FLOPs per training step (F+B+W): " << grouped(report.train_flops) << "\n";
  out << "activation bytes per training step: " << grouped(report.activation_bytes) << "\n";
  return out.str();
}

}  // namespace ravnest::fe
