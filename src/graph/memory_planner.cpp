#include "graph/memory_planner.h"

#include <algorithm>
#include <numeric>

namespace espresso {

MemoryPlan plan_memory(const std::vector<BufferRequest>& requests, std::size_t alignment) {
  const auto align = [&](std::size_t n) { return (n + alignment - 1) / alignment * alignment; };
  MemoryPlan plan;
  plan.offsets.assign(requests.size(), 0);

  std::vector<std::size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return requests[a].bytes > requests[b].bytes; });

  struct Placed {
    std::size_t offset, end;
    int first, last;
  };
  std::vector<Placed> placed;
  for (std::size_t index : order) {
    const BufferRequest& r = requests[index];
    const std::size_t size = align(r.bytes);
    plan.naive_bytes += size;
    // Candidate gaps: the buffers alive at the same time, sorted by offset.
    std::vector<const Placed*> live;
    for (const Placed& p : placed) {
      if (p.first <= r.last_step && r.first_step <= p.last) live.push_back(&p);
    }
    std::sort(live.begin(), live.end(), [](const Placed* a, const Placed* b) { return a->offset < b->offset; });
    std::size_t offset = 0;
    for (const Placed* p : live) {
      if (offset + size <= p->offset) break;
      offset = std::max(offset, p->end);
    }
    plan.offsets[index] = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + size);
    placed.push_back({offset, offset + size, r.first_step, r.last_step});
  }
  return plan;
}

}  // namespace espresso
