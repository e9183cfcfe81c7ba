// Contiguous stage split: assigns a topologically ordered node list to K
// stages, each a contiguous run, minimising the most expensive stage exactly
// (dynamic program over prefix sums), with stage speeds taken into account.
// This is the chain partitioner; graphs with branches are split at their
// topological order, which keeps stages acyclic (each stage reads only from
// earlier stages).
#pragma once

#include <vector>

#include "common/status.h"

namespace ravnest::part {

struct ContiguousSplit {
  std::vector<int> stage_of_node;  // one entry per node
  std::vector<double> stage_cost;  // cost / speed per stage
  double bottleneck = 0;
};

// `cost[i]`: time units of node i on a unit-speed machine; `speed[s]`: relative
// speed of stage s's machine (all 1 for a uniform split). Every stage gets at
// least one node; an error if there are fewer nodes than stages.
Result<ContiguousSplit> split_contiguous(const std::vector<double>& cost, const std::vector<double>& speed);

}  // namespace ravnest::part
