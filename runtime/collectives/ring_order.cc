// Ring order (see ring_order.h): exact search for small rings, greedy + local search above.
#include "runtime/collectives/ring_order.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ravnest::rt {
namespace {

// What a ring order is judged by: the slowest hop first, then the sum of hops.
struct RingCost {
  double bottleneck = 0;
  double total = 0;
  bool operator<(const RingCost& other) const {
    if (bottleneck != other.bottleneck) return bottleneck < other.bottleneck;
    return total < other.total;
  }
};

RingCost cost_of(const HopTimes& times, std::span<const size_t> order) {
  RingCost cost;
  const size_t n = order.size();
  if (n < 2) return cost;
  for (size_t k = 0; k < n; ++k) {
    double hop = times.at(order[k], order[(k + 1) % n]);
    cost.bottleneck = std::max(cost.bottleneck, hop);
    cost.total += hop;
  }
  return cost;
}

RingPlan make_plan(const HopTimes& times, std::vector<size_t> order, bool exact) {
  RingCost cost = cost_of(times, order);
  return RingPlan{std::move(order), cost.bottleneck, cost.total, exact};
}

// Every permutation with member 0 first, in lexicographic order; the first best one wins.
std::vector<size_t> exact_order(const HopTimes& times) {
  std::vector<size_t> order(times.n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::vector<size_t> best = order;
  RingCost best_cost = cost_of(times, best);
  while (std::next_permutation(order.begin() + 1, order.end())) {
    RingCost cost = cost_of(times, order);
    if (cost < best_cost) {
      best_cost = cost;
      best = order;
    }
  }
  return best;
}

// Nearest neighbour from `start` (ties to the lowest index), rotated so member 0 is first.
std::vector<size_t> greedy_order(const HopTimes& times, size_t start) {
  const size_t n = times.n;
  std::vector<bool> visited(n, false);
  std::vector<size_t> tour{start};
  visited[start] = true;
  while (tour.size() < n) {
    size_t from = tour.back(), next = n;
    for (size_t j = 0; j < n; ++j) {
      if (visited[j]) continue;
      if (next == n || times.at(from, j) < times.at(from, next)) next = j;
    }
    visited[next] = true;
    tour.push_back(next);
  }
  std::rotate(tour.begin(), std::find(tour.begin(), tour.end(), size_t{0}), tour.end());
  return tour;
}

// First-improvement local search over two move kinds, positions 1..n-1 only (member 0
// stays first): reverse the segment [i, j] (2-opt; the hops inside change direction), and
// move the member at position i to position j. Stops when no move helps or after a
// bounded number of passes.
void improve(const HopTimes& times, std::vector<size_t>& order) {
  const size_t n = order.size();
  constexpr int kMaxPasses = 200;
  RingCost cost = cost_of(times, order);
  std::vector<size_t> candidate;
  for (int pass = 0; pass < kMaxPasses; ++pass) {
    bool improved = false;
    for (size_t i = 1; i + 1 < n; ++i) {
      for (size_t j = i + 1; j < n; ++j) {
        candidate = order;
        std::reverse(candidate.begin() + static_cast<std::ptrdiff_t>(i),
                     candidate.begin() + static_cast<std::ptrdiff_t>(j) + 1);
        RingCost c = cost_of(times, candidate);
        if (c < cost) {
          cost = c;
          order.swap(candidate);
          improved = true;
        }
      }
    }
    for (size_t i = 1; i < n; ++i) {
      for (size_t j = 1; j < n; ++j) {
        if (i == j) continue;
        candidate = order;
        size_t member = candidate[i];
        candidate.erase(candidate.begin() + static_cast<std::ptrdiff_t>(i));
        candidate.insert(candidate.begin() + static_cast<std::ptrdiff_t>(j), member);
        RingCost c = cost_of(times, candidate);
        if (c < cost) {
          cost = c;
          order.swap(candidate);
          improved = true;
        }
      }
    }
    if (!improved) return;
  }
}

std::vector<size_t> heuristic_order(const HopTimes& times) {
  std::vector<size_t> best;
  RingCost best_cost;
  for (size_t start = 0; start < times.n; ++start) {
    std::vector<size_t> order = greedy_order(times, start);
    RingCost cost = cost_of(times, order);
    if (best.empty() || cost < best_cost) {
      best_cost = cost;
      best = std::move(order);
    }
  }
  improve(times, best);
  return best;
}

}  // namespace

Status validate_hop_times(const HopTimes& times) {
  if (times.n == 0) return error(Code::kInvalidArgument, "ring order: a ring needs at least one member");
  if (times.seconds.size() != times.n * times.n) {
    return error(Code::kInvalidArgument, "ring order: hop times for ", times.n, " members need ", times.n * times.n,
                 " entries (row-major N x N), got ", times.seconds.size());
  }
  for (size_t i = 0; i < times.n; ++i) {
    for (size_t j = 0; j < times.n; ++j) {
      double t = times.at(i, j);
      if (i != j && (std::isnan(t) || t < 0)) {
        return error(Code::kInvalidArgument, "ring order: hop time from member ", i, " to member ", j, " is ", t,
                     "; give seconds >= 0 (+infinity for a link that must be avoided)");
      }
    }
  }
  return ok_status();
}

Result<RingPlan> plan_ring_order(const HopTimes& times, const RingPlanOptions& options) {
  RN_RETURN_IF_ERROR(validate_hop_times(times));
  if (times.n <= 2) {
    std::vector<size_t> order(times.n);
    std::iota(order.begin(), order.end(), size_t{0});
    return make_plan(times, std::move(order), true);
  }
  if (times.n <= options.exact_limit) return make_plan(times, exact_order(times), true);
  return make_plan(times, heuristic_order(times), false);
}

double ring_bottleneck(const HopTimes& times, std::span<const size_t> order) {
  return cost_of(times, order).bottleneck;
}

double ring_total(const HopTimes& times, std::span<const size_t> order) {
  return cost_of(times, order).total;
}

bool should_replan(const HopTimes& planned, const HopTimes& now, std::span<const size_t> order, double factor) {
  const size_t n = order.size();
  if (n < 2) return false;
  for (size_t k = 0; k < n; ++k) {
    size_t from = order[k], to = order[(k + 1) % n];
    if (now.at(from, to) >= factor * planned.at(from, to) && now.at(from, to) > planned.at(from, to)) return true;
  }
  return false;
}

std::vector<std::string> ordered_members(const std::vector<std::string>& members, std::span<const size_t> order) {
  std::vector<std::string> out;
  out.reserve(order.size());
  for (size_t index : order) out.push_back(members[index]);
  return out;
}

}  // namespace ravnest::rt
