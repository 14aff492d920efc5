// A small persistent thread pool for CPU kernels.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace espresso {

class ThreadPool;

// Worker threads of one's own, for a Session whose thread count differs from the process's: the
// threads that install it with ScopedThreads run parallel_for on it (and num_threads() reports it).
class ThreadGroup {
 public:
  explicit ThreadGroup(int threads);
  ~ThreadGroup();
  ThreadGroup(const ThreadGroup&) = delete;
  ThreadGroup& operator=(const ThreadGroup&) = delete;
  int size() const;

 private:
  friend class ScopedThreads;
  std::unique_ptr<ThreadPool> pool_;
};

// Makes `group` (nullptr: keep the current one) this thread's pool until the scope ends.
class ScopedThreads {
 public:
  explicit ScopedThreads(ThreadGroup* group);
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  ThreadPool* previous_;
};

// True inside a parallel_for body run on the pool, where further parallel_for calls run serially.
bool in_parallel_region();

// Splits [0, n) into contiguous chunks of at least `grain` items and runs `body(begin, end)` on
// the pool, the calling thread included (it always runs the first chunk). One chunk per thread by
// default, so that kernels splitting the same data alike keep it on the same cores; where the work per
// index is uneven, more chunks per thread let a thread that finishes early take more. Nested calls run
// serially on the calling thread.
void parallel_for(std::int64_t n, const std::function<void(std::int64_t, std::int64_t)>& body,
                  std::int64_t grain = 1, int chunks_per_thread = 1);

}  // namespace espresso
