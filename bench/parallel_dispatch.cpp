// Dispatch cost of the CPU thread pool (docs/cpu-performance.md): jobs shaped like a batch-1 forward's,
// two chunks of ~2 µs each separated by ~10 µs of serial work, timed per job (median of 7 rounds of
// 2000). Compare threads 1 and 2, and ESPRESSO_SPIN_US=0 (workers sleep at once) with the default.
// Usage: espresso_bench_dispatch [THREADS] [CHUNK_ITERATIONS] [GAP_ITERATIONS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/parallel.h"
#include "espresso/net.h"

namespace {

volatile double sink;

void busy(long iterations) {
  double x = 0;
  for (long i = 0; i < iterations; ++i) x += static_cast<double>(i) * 1e-9;
  sink = x;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const long chunk = argc > 2 ? std::atol(argv[2]) : 2000;
  const long gap = argc > 3 ? std::atol(argv[3]) : 10000;
  espresso::set_num_threads(threads);
  std::vector<double> per_job;
  for (int round = 0; round < 7; ++round) {
    const auto start = std::chrono::steady_clock::now();
    for (int job = 0; job < 2000; ++job) {
      espresso::parallel_for(2, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) busy(chunk);
      });
      busy(gap);
    }
    per_job.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
                      2000);
  }
  std::sort(per_job.begin(), per_job.end());
  std::printf("{\"threads\": %d, \"median_us_per_job\": %.2f, \"min_us_per_job\": %.2f}\n", threads, per_job[3],
              per_job[0]);
}
