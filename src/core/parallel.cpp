#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <cblas.h>

#include "espresso/net.h"

namespace espresso {

// A job is published as one 64-bit ticket: the job's number, its chunk count and the next chunk to
// hand out. Threads claim chunks by compare-and-swap on the ticket, so a worker that wakes late (after
// its job was finished by others, or during the next job) can never run a chunk of a job it did not
// see published; the calling thread runs chunk 0 itself, takes further chunks too and waits only for
// chunks that were claimed, never for workers that have not woken yet. Between jobs the workers spin for a
// while (ESPRESSO_SPIN_US, default 200 µs; batch-1 inference runs dozens of short jobs per forward, each of
// which would otherwise pay a futex wake-up), yielding the core after the first few microseconds, and then
// sleep on a condition variable; the caller likewise spins before it sleeps waiting for the last claimed
// chunks. A pool of n threads has n - 1 workers.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) : spin_(spin_duration()) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_.store(true);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // At most kMaxChunks chunks (the ticket's 16 bits).
  static constexpr std::int64_t kMaxChunks = 0xFFFF;

  void run(std::int64_t chunks, const std::function<void(std::int64_t)>& chunk_body) {
    std::unique_lock run_lock(run_mutex_);  // one job at a time
    body_ = &chunk_body;
    done_.store(0);
    job_ = (job_ + 1) & kJobMask;
    // Chunk 0 is the caller's, never a worker's, so the caller takes the same part of every job.
    ticket_.store(job_ << 32 | static_cast<std::uint64_t>(chunks) << 16 | 1);
    if (sleepers_.load() > 0) {
      { std::lock_guard lock(mutex_); }
      wake_.notify_all();
    }
    run_chunk(0);
    take_chunks(job_);
    wait_done(chunks);
    body_ = nullptr;
    if (error_) {
      std::exception_ptr error;
      std::swap(error, error_);
      std::rethrow_exception(error);
    }
  }

 private:
  static constexpr std::uint64_t kJobMask = 0xFFFFFFFFu;

  static std::chrono::nanoseconds spin_duration() {
    long us = 200;
    if (const char* env = std::getenv("ESPRESSO_SPIN_US")) us = std::max(0L, std::atol(env));
    return std::chrono::microseconds(us);
  }

  // One wait of a spin: a pause instruction for the first few microseconds, then a yield, so that on a
  // busy machine the spinning thread hands its core to the thread it is waiting for (or to others).
  static void back_off(int i) {
    if (i < 256) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }

  // Runs a claimed chunk of the current job and counts it in done_. The first exception a chunk throws
  // is kept for run() to rethrow.
  void run_chunk(std::int64_t chunk) {
    try {
      (*body_)(chunk);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    done_.fetch_add(1);
  }

  // Claims and runs chunks of job `job` until none is left, counting each in done_ as it finishes.
  // Returns whether it ran any.
  bool take_chunks(std::uint64_t job) {
    bool ran = false;
    std::uint64_t t = ticket_.load();
    for (;;) {
      if (t >> 32 != job) return ran;
      const std::uint64_t chunks = t >> 16 & 0xFFFF, next = t & 0xFFFF;
      if (next >= chunks) return ran;
      if (!ticket_.compare_exchange_weak(t, t + 1)) continue;
      // The chunk is claimed, so job `job` is unfinished and body_ is still its body.
      run_chunk(static_cast<std::int64_t>(next));
      ran = true;
      t = ticket_.load();
    }
  }

  // Spins until ready() holds or the spin time is up; false when it is up (the caller then sleeps).
  template <typename Ready>
  bool spin_until(Ready ready) const {
    const auto deadline = std::chrono::steady_clock::now() + spin_;
    for (int i = 0; !ready(); ++i) {
      if ((i & 15) == 15 && std::chrono::steady_clock::now() >= deadline) return false;
      back_off(i);
    }
    return true;
  }

  // The caller: every chunk handed out has finished (spin, then sleep).
  void wait_done(std::int64_t chunks) {
    const auto finished = [&] { return done_.load() >= chunks; };
    if (spin_until(finished)) return;
    std::unique_lock lock(mutex_);
    caller_waiting_.store(true);
    finished_.wait(lock, finished);
    caller_waiting_.store(false);
  }

  void work() {
    std::uint64_t seen = 0;
    for (;;) {
      // Wait for a job other than the last one seen: spin first, then sleep.
      const auto next_job = [&] { return stopping_.load() || ticket_.load() >> 32 != seen; };
      if (!spin_until(next_job)) {
        std::unique_lock lock(mutex_);
        sleepers_.fetch_add(1);
        wake_.wait(lock, next_job);
        sleepers_.fetch_sub(1);
      }
      const std::uint64_t job = ticket_.load() >> 32;
      if (stopping_.load()) return;
      seen = job;
      if (!take_chunks(job)) continue;
      // done_ moved before this check (both seq_cst): the caller either sees the count before it
      // sleeps or is seen waiting here.
      if (caller_waiting_.load()) {
        { std::lock_guard lock(mutex_); }
        finished_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  const std::chrono::nanoseconds spin_;
  std::mutex run_mutex_;
  std::mutex mutex_;  // for sleeping only
  std::condition_variable wake_;
  std::condition_variable finished_;
  const std::function<void(std::int64_t)>* body_ = nullptr;
  std::uint64_t job_ = 0;                 // the current job's number (written by run() only)
  std::atomic<std::uint64_t> ticket_{0};  // job << 32 | chunks << 16 | next chunk
  std::atomic<std::int64_t> done_{0};     // chunks of the current job finished
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_waiting_{false};
  std::atomic<bool> stopping_{false};
  std::exception_ptr error_;  // guarded by mutex_ while a job runs
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
                  std::int64_t grain, int chunks_per_thread) {
  if (n <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  ThreadPool& threads = get_pool();
  if (inside_parallel_region || threads.size() == 1 || n <= grain) {
    body(0, n);
    return;
  }
  // One chunk per thread by default: the caller runs the first, so consecutive layers that split an
  // image's columns alike find (on two cores) their halves in the same core's L2. Four chunks a thread,
  // claimed in whatever order the threads came by, scattered them (batch 1 on two cores: SqueezeNet,
  // MobileNetV2 and ResNet-18 4-10 % slower). A worker that wakes late still leaves its chunk to the
  // caller.
  const std::int64_t chunks = std::min<std::int64_t>(
      {(n + grain - 1) / grain, std::int64_t{threads.size()} * std::max(1, chunks_per_thread),
       ThreadPool::kMaxChunks});
  const std::int64_t step = (n + chunks - 1) / chunks;
  const std::function<void(std::int64_t)> chunk_body = [&](std::int64_t c) {
    const std::int64_t begin = c * step;
    const std::int64_t end = std::min(n, begin + step);
    if (begin >= end) return;
    struct Region {
      Region() { inside_parallel_region = true; }
      ~Region() { inside_parallel_region = false; }
    } region;
    body(begin, end);
  };
  threads.run(chunks, chunk_body);
}

}  // namespace espresso
