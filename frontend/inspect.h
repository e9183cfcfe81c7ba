// The `ravnestc inspect` report: per node, what the cost model sees.
//
// Guarantees: one row per node of the imported graph, in execution order; FLOPs
// and bytes come from the op table's cost rules (so they are what the partitioner
// balances); totals count each parameter once even if several nodes read it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/graph.h"

namespace ravnest::fe {

struct InspectRow {
  std::string name;
  std::string op;
  std::vector<std::string> output_shapes;  // "64x32x28x28"
  int64_t parameters = 0;        // elements of the parameters the node reads
  double flops = 0;              // forward
  double train_flops = 0;        // forward + B + W for one training step
  double activation_bytes = 0;   // float outputs kept for the backward
};

struct InspectReport {
  std::string model;
  std::vector<InspectRow> rows;
  int64_t parameters = 0;
  double parameter_bytes = 0;
  double flops = 0;
  double train_flops = 0;
  double activation_bytes = 0;
};

// `graph` must have static shapes (as import_model returns it).
Result<InspectReport> inspect_graph(const Graph& graph);
// The human-readable table printed by `ravnestc inspect`.
std::string format_report(const InspectReport& report);

}  // namespace ravnest::fe
