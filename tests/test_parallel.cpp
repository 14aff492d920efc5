// The CPU thread pool (src/core/parallel.h): every index of every job runs exactly once, also when
// jobs follow each other faster than workers wake (they spin, then sleep) and after the workers fell
// asleep; an exception thrown in a chunk reaches the caller and leaves the pool usable; nested calls
// run serially on the calling thread; ThreadGroups of other sizes and several callers at once.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/parallel.h"

namespace espresso {
namespace {

// Runs `jobs` parallel_for jobs of n indices and checks each index ran once per job.
void expect_each_index_once(int jobs, std::int64_t n, std::int64_t grain) {
  std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
  for (int job = 0; job < jobs; ++job) {
    for (auto& h : hits) h.store(0);
    parallel_for(
        n,
        [&](std::int64_t begin, std::int64_t end) {
          ASSERT_LE(0, begin);
          ASSERT_LT(begin, end);
          ASSERT_LE(end, n);
          for (std::int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
        },
        grain);
    for (std::int64_t i = 0; i < n; ++i)
      ASSERT_EQ(hits[static_cast<std::size_t>(i)].load(), 1)
          << "job " << job << " index " << i << " of " << n;
  }
}

TEST(ThreadPool, EveryIndexRunsOnceInManyShortJobs) {
  ThreadGroup group(4);  // more threads than this machine may have: workers get descheduled
  ScopedThreads scope(&group);
  for (std::int64_t n : {1, 2, 3, 7, 16, 17, 100, 1001}) expect_each_index_once(500, n, 1);
  expect_each_index_once(50, 1000, 37);
}

TEST(ThreadPool, JobsAfterTheWorkersFellAsleepStillRun) {
  ThreadGroup group(3);
  ScopedThreads scope(&group);
  for (int round = 0; round < 3; ++round) {
    // Longer than the default spin (200 µs), so the workers sleep on the condition variable.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::atomic<int> threads_seen{0};
    std::vector<std::atomic<int>> hits(64);
    parallel_for(64, [&](std::int64_t begin, std::int64_t end) {
      threads_seen.fetch_add(1);
      for (std::int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
    EXPECT_GE(threads_seen.load(), 1);
  }
}

TEST(ThreadPool, ExceptionInAChunkReachesTheCallerAndThePoolStaysUsable) {
  ThreadGroup group(2);
  ScopedThreads scope(&group);
  for (int round = 0; round < 20; ++round) {
    EXPECT_THROW(parallel_for(8,
                              [&](std::int64_t begin, std::int64_t end) {
                                // The chunk holding index round % 8: the caller's or a worker's.
                                if (begin <= round % 8 && round % 8 < end)
                                  throw std::runtime_error("chunk failed");
                              }),
                 std::runtime_error);
    EXPECT_FALSE(in_parallel_region());
    expect_each_index_once(3, 64, 1);
  }
}

TEST(ThreadPool, NestedCallsRunSeriallyInsideTheRegion) {
  ThreadGroup group(2);
  ScopedThreads scope(&group);
  std::atomic<std::int64_t> inner_total{0};
  parallel_for(8, [&](std::int64_t begin, std::int64_t end) {
    EXPECT_TRUE(in_parallel_region());
    for (std::int64_t i = begin; i < end; ++i) {
      const auto caller = std::this_thread::get_id();
      parallel_for(10, [&](std::int64_t b, std::int64_t e) {
        EXPECT_EQ(std::this_thread::get_id(), caller);
        inner_total.fetch_add(e - b);
      });
    }
  });
  EXPECT_EQ(inner_total.load(), 80);
  EXPECT_FALSE(in_parallel_region());
}

TEST(ThreadPool, SeveralCallersShareOneGroup) {
  ThreadGroup group(2);
  std::atomic<bool> failed{false};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t) {
    callers.emplace_back([&] {
      ScopedThreads scope(&group);
      for (int job = 0; job < 200; ++job) {
        std::vector<std::atomic<int>> hits(33);
        parallel_for(33, [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
        });
        for (auto& h : hits) failed = failed || h.load() != 1;
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_FALSE(failed.load());
}

}  // namespace
}  // namespace espresso
