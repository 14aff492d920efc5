#include <gtest/gtest.h>

#include "graph/memory_planner.h"
#include "harness/layer_harness.h"

namespace espresso {

// No two buffers that are alive at the same step may overlap in memory.
TEST(MemoryPlanner, NeverOverlapsLiveBuffers) {
  testing::Rng rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<BufferRequest> requests;
    const int n = rng.integer(1, 40);
    for (int i = 0; i < n; ++i) {
      const int first = rng.integer(0, 30);
      requests.push_back({static_cast<std::size_t>(rng.integer(1, 5000)), first, first + rng.integer(0, 6)});
    }
    const MemoryPlan plan = plan_memory(requests);
    std::size_t naive = 0;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      naive += (requests[i].bytes + 63) / 64 * 64;
      EXPECT_EQ(plan.offsets[i] % 64, 0u);
      EXPECT_LE(plan.offsets[i] + requests[i].bytes, plan.arena_bytes);
      for (std::size_t j = 0; j < i; ++j) {
        const bool same_time = requests[i].first_step <= requests[j].last_step &&
                               requests[j].first_step <= requests[i].last_step;
        const bool same_space = plan.offsets[i] < plan.offsets[j] + requests[j].bytes &&
                                plan.offsets[j] < plan.offsets[i] + requests[i].bytes;
        EXPECT_FALSE(same_time && same_space) << "buffers " << i << " and " << j;
      }
    }
    EXPECT_EQ(plan.naive_bytes, naive);
    EXPECT_LE(plan.arena_bytes, plan.naive_bytes);
  }
}

TEST(MemoryPlanner, ReusesDeadBuffersInAChain) {
  // A chain of 10 equal buffers, each read only by the next step, needs two slots.
  std::vector<BufferRequest> chain;
  for (int i = 0; i < 10; ++i) chain.push_back({1024, i, i + 1});
  EXPECT_EQ(plan_memory(chain).arena_bytes, 2048u);
}

}  // namespace espresso
