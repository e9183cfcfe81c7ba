// Greedy-by-size arena placement (see memory_plan.h for the guarantees).
#include "runtime/memory_plan.h"

#include <algorithm>
#include <numeric>

namespace ravnest::rt {

MemoryPlan plan_memory(const std::vector<BufferLife>& buffers, size_t alignment) {
  MemoryPlan plan;
  plan.offsets.assign(buffers.size(), 0);
  auto align = [alignment](size_t n) { return (n + alignment - 1) / alignment * alignment; };
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (buffers[a].bytes != buffers[b].bytes) return buffers[a].bytes > buffers[b].bytes;
    return buffers[a].first < buffers[b].first;
  });
  std::vector<size_t> placed;
  for (size_t id : order) {
    const BufferLife& buf = buffers[id];
    plan.unplanned_bytes += buf.bytes;
    const size_t need = align(buf.bytes);
    // Byte ranges of placed buffers live at the same time, by offset.
    std::vector<std::pair<size_t, size_t>> busy;
    for (size_t other : placed)
      if (lives_overlap(buf, buffers[other]))
        busy.emplace_back(plan.offsets[other], plan.offsets[other] + align(buffers[other].bytes));
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;  // lowest candidate; always aligned since every end is aligned
    for (const auto& [begin, end] : busy) {
      if (begin >= offset + need) break;  // the gap before this range fits
      offset = std::max(offset, end);
    }
    plan.offsets[id] = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + need);
    placed.push_back(id);
  }
  return plan;
}

}  // namespace ravnest::rt
