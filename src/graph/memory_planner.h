// Places activation buffers in one arena so that buffers whose lifetimes do not overlap share
// memory.
#pragma once

#include <cstddef>
#include <vector>

namespace espresso {

struct BufferRequest {
  std::size_t bytes = 0;
  int first_step = 0;  // the step that writes it
  int last_step = 0;   // the last step that reads it (inclusive)
};

struct MemoryPlan {
  std::vector<std::size_t> offsets;  // one per request, aligned
  std::size_t arena_bytes = 0;
  std::size_t naive_bytes = 0;  // sum of all aligned requests
};

// Greedy by size: the largest buffers are placed first, each at the lowest offset that does not
// collide with a placed buffer whose lifetime overlaps.
MemoryPlan plan_memory(const std::vector<BufferRequest>& requests, std::size_t alignment = 64);

}  // namespace espresso
