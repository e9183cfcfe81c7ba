// Ring order: which member follows which in a ring all-reduce, chosen from measured link times.
//
// Guarantees:
//  * plan_ring_order() returns a permutation of 0..N-1 that starts with member 0 and
//    minimises, lexicographically, (the slowest hop, the sum of all hops) of the directed
//    ring order[0] -> order[1] -> ... -> order[N-1] -> order[0]. Exact (every permutation
//    with member 0 first) for N <= RingPlanOptions::exact_limit (default 9); above that a
//    greedy nearest-neighbour tour from every start, improved by 2-opt and single-member
//    moves until no move helps (a good order, not a proven best one).
//  * Deterministic: the same matrix and options give the same order on every member
//    (ties go to the order that is first in lexicographic order; no randomness, no
//    floating-point sums in another order).
//  * should_replan() says whether a hop of the planned order became `factor` (default 2)
//    times slower or more, comparing the matrix the order was planned with to a newer one.
// Hop times are seconds to move one chunk from member i to member j; direction matters
// (upload and download rates of home links differ). See docs/routing.md.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace ravnest::rt {

// Seconds to move one chunk from member `from` to member `to`, row-major N x N. The
// diagonal is ignored. +infinity marks a link that must not be used if there is a choice.
struct HopTimes {
  size_t n = 0;
  std::vector<double> seconds;  // seconds[from * n + to]
  double at(size_t from, size_t to) const { return seconds[from * n + to]; }
};

// Checks n >= 1, seconds.size() == n * n, and every off-diagonal entry is >= 0 and not NaN.
Status validate_hop_times(const HopTimes& times);

struct RingPlanOptions {
  size_t exact_limit = 9;  // N at or below this: every permutation; above: greedy + 2-opt
};

struct RingPlan {
  std::vector<size_t> order;  // member indices in ring order; order[0] == 0
  double bottleneck_s = 0;    // the slowest hop of the ring
  double total_s = 0;         // the sum of its hops
  bool exact = false;         // true when every permutation was compared
};

Result<RingPlan> plan_ring_order(const HopTimes& times, const RingPlanOptions& options = {});

// The slowest hop and the sum of the hops of the directed ring `order` (0 for N = 1).
// `order` must be a permutation of 0..times.n-1.
double ring_bottleneck(const HopTimes& times, std::span<const size_t> order);
double ring_total(const HopTimes& times, std::span<const size_t> order);

// True when a hop of the ring `order` takes at least `factor` times as long in `now`
// as in `planned` (the matrix the order was chosen from). Both matrices must be valid
// and of the same size, `order` a permutation of their members.
bool should_replan(const HopTimes& planned, const HopTimes& now, std::span<const size_t> order, double factor = 2.0);

// members[order[0]], members[order[1]], ...: the ids in ring order for RingOptions::members.
std::vector<std::string> ordered_members(const std::vector<std::string>& members, std::span<const size_t> order);

}  // namespace ravnest::rt
