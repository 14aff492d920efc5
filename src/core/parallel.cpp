#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <cblas.h>

#include "espresso/net.h"

namespace espresso {

// Workers wait for a job, take chunks from a shared counter, and report when done. The calling
// thread takes chunks too, so a pool of n threads has n - 1 workers.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void run(std::int64_t chunks, const std::function<void(std::int64_t)>& chunk_body) {
    std::unique_lock run_lock(run_mutex_);  // one job at a time
    {
      std::lock_guard lock(mutex_);
      body_ = &chunk_body;
      chunks_ = chunks;
      next_.store(0);
      active_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    take_chunks();
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return active_ == 0; });
    body_ = nullptr;
  }

 private:
  void take_chunks() {
    for (std::int64_t c = next_.fetch_add(1); c < chunks_; c = next_.fetch_add(1)) (*body_)(c);
  }
  void work() {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      take_chunks();
      std::lock_guard lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(std::int64_t)>* body_ = nullptr;
  std::int64_t chunks_ = 0;
  std::atomic<std::int64_t> next_{0};
  int active_ = 0;
  std::uint64_t generation_ = 0;
  bool stopping_ = false;
};

namespace {

int default_threads() {
  if (const char* env = std::getenv("ESPRESSO_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

std::mutex pool_mutex;
std::unique_ptr<ThreadPool> pool;
int requested_threads = 0;
thread_local bool inside_parallel_region = false;
// The group installed by ScopedThreads on this thread, if any.
thread_local ThreadPool* scoped_pool = nullptr;

ThreadPool& get_pool() {
  if (scoped_pool != nullptr) return *scoped_pool;
  std::lock_guard lock(pool_mutex);
  if (!pool) {
    const int threads = requested_threads > 0 ? requested_threads : default_threads();
    pool = std::make_unique<ThreadPool>(threads);
    openblas_set_num_threads(threads);
  }
  return *pool;
}

}  // namespace

ThreadGroup::ThreadGroup(int threads) : pool_(std::make_unique<ThreadPool>(std::max(1, threads))) {}
ThreadGroup::~ThreadGroup() = default;
int ThreadGroup::size() const { return pool_->size(); }

ScopedThreads::ScopedThreads(ThreadGroup* group) : previous_(scoped_pool) {
  if (group != nullptr) scoped_pool = group->pool_.get();
}
ScopedThreads::~ScopedThreads() { scoped_pool = previous_; }

void set_num_threads(int threads) {
  std::lock_guard lock(pool_mutex);
  requested_threads = threads;
  pool.reset();
}

int num_threads() { return get_pool().size(); }

bool in_parallel_region() { return inside_parallel_region; }

void parallel_for(std::int64_t n, const std::function<void(std::int64_t, std::int64_t)>& body,
                  std::int64_t grain) {
  if (n <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  ThreadPool& threads = get_pool();
  if (inside_parallel_region || threads.size() == 1 || n <= grain) {
    body(0, n);
    return;
  }
  // A few chunks per thread balances uneven work without much overhead.
  const std::int64_t chunks = std::min<std::int64_t>((n + grain - 1) / grain, threads.size() * 4);
  const std::int64_t step = (n + chunks - 1) / chunks;
  const std::function<void(std::int64_t)> chunk_body = [&](std::int64_t c) {
    const std::int64_t begin = c * step;
    const std::int64_t end = std::min(n, begin + step);
    if (begin >= end) return;
    inside_parallel_region = true;
    body(begin, end);
    inside_parallel_region = false;
  };
  threads.run(chunks, chunk_body);
}

}  // namespace espresso
