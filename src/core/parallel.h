// A small persistent thread pool for CPU kernels.
#pragma once

#include <cstdint>
#include <functional>

namespace espresso {

// Splits [0, n) into contiguous chunks of at least `grain` items and runs `body(begin, end)` on
// the pool, the calling thread included. Nested calls run serially on the calling thread.
void parallel_for(std::int64_t n, const std::function<void(std::int64_t, std::int64_t)>& body,
                  std::int64_t grain = 1);

}  // namespace espresso
