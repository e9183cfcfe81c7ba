#include "partitioner/contiguous.h"

#include <algorithm>
#include <limits>

namespace ravnest::part {

Result<ContiguousSplit> split_contiguous(const std::vector<double>& cost, const std::vector<double>& speed) {
  const size_t n = cost.size();
  const size_t k = speed.size();
  if (k == 0) return error(Code::kInvalidArgument, "at least one stage is needed");
  if (n < k)
    return error(Code::kInvalidArgument, "cannot split ", n, " nodes into ", k, " stages; use at most ", n, " stages");
  for (double s : speed)
    if (!(s > 0)) return error(Code::kInvalidArgument, "stage speeds must be positive");
  std::vector<double> prefix(n + 1, 0.0);
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + std::max(0.0, cost[i]);
  const double inf = std::numeric_limits<double>::infinity();
  // best[s][i]: minimal bottleneck placing nodes [0, i) on stages [0, s).
  std::vector<std::vector<double>> best(k + 1, std::vector<double>(n + 1, inf));
  std::vector<std::vector<size_t>> cut(k + 1, std::vector<size_t>(n + 1, 0));
  best[0][0] = 0;
  for (size_t s = 1; s <= k; ++s) {
    for (size_t i = s; i + (k - s) <= n; ++i) {
      for (size_t j = s - 1; j < i; ++j) {
        if (best[s - 1][j] == inf) continue;
        double stage = (prefix[i] - prefix[j]) / speed[s - 1];
        double value = std::max(best[s - 1][j], stage);
        // Ties: prefer the later cut so that earlier stages (which hold more
        // activations in flight under 1F1B) get less work.
        if (value < best[s][i] || (value == best[s][i] && j > cut[s][i])) {
          best[s][i] = value;
          cut[s][i] = j;
        }
      }
    }
  }
  ContiguousSplit out;
  out.stage_of_node.assign(n, 0);
  out.stage_cost.assign(k, 0);
  out.bottleneck = best[k][n];
  size_t end = n;
  for (size_t s = k; s >= 1; --s) {
    size_t begin = cut[s][end];
    for (size_t i = begin; i < end; ++i) out.stage_of_node[i] = static_cast<int>(s - 1);
    out.stage_cost[s - 1] = (prefix[end] - prefix[begin]) / speed[s - 1];
    end = begin;
  }
  return out;
}

}  // namespace ravnest::part
