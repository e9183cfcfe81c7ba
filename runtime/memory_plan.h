// The memory plan: offsets of intermediate buffers in one arena, from their sizes
// and live intervals.
//
// Guarantees: two buffers whose live intervals [first, last] (node indices,
// inclusive) intersect get disjoint byte ranges; every offset is a multiple of
// `alignment`; arena_bytes >= the largest buffer and <= the sum of the aligned
// sizes. Placement is greedy: largest buffer first, each into the lowest gap
// between already-placed, simultaneously live buffers that fits it.
#pragma once

#include <cstddef>
#include <vector>

namespace ravnest::rt {

struct BufferLife {
  size_t bytes = 0;
  int first = 0;  // index of the node writing it
  int last = 0;   // index of the last node reading it (>= first)
};

struct MemoryPlan {
  std::vector<size_t> offsets;  // one per buffer, in the order given
  size_t arena_bytes = 0;
  size_t unplanned_bytes = 0;  // sum of the (unaligned) sizes: the cost without reuse
};

MemoryPlan plan_memory(const std::vector<BufferLife>& buffers, size_t alignment = 64);

inline bool lives_overlap(const BufferLife& a, const BufferLife& b) { return a.first <= b.last && b.first <= a.last; }

}  // namespace ravnest::rt
