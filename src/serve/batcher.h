// Dynamic batching for one model: requests queue up; a worker takes the oldest, waits up to the
// queue delay for more requests whose inputs have the same names and per-sample shapes, concatenates
// them along dimension 0 (at most max_batch samples), runs them as one batch and splits the outputs
// back. A model whose outputs do not carry the batch in dimension 0 runs each request alone. `run`
// receives the batch size as dimension 0 of its inputs (the padded one when padding).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "espresso/tensor.h"

namespace espresso::serve {

using TensorMap = std::map<std::string, Tensor>;

struct BatcherOptions {
  int max_batch = 32;
  std::chrono::microseconds max_queue_delay{2000};
  int workers = 1;
  // Zero-pads each batch to the next power of two (at most max_batch), so the sessions see a few batch
  // sizes and keep their plans (and CUDA graphs) instead of replanning for every size.
  bool pad_to_buckets = false;
};

class Batcher {
 public:
  // `run` computes a batch (inputs concatenated) and returns every output on the CPU; `on_batch` hears
  // the samples of each batch run.
  Batcher(BatcherOptions options, std::function<TensorMap(const TensorMap&)> run,
          std::function<void(std::int64_t)> on_batch);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues one request (every input with the same dimension 0, its sample count); the future holds its
  // outputs or the exception the run threw.
  std::future<TensorMap> submit(TensorMap inputs);
  // Runs what is queued, then stops the workers.
  void shutdown();

 private:
  struct Job {
    TensorMap inputs;
    std::int64_t samples = 0;
    std::string key;  // input names and per-sample shapes
    std::chrono::steady_clock::time_point arrived;
    std::promise<TensorMap> result;
  };
  // A worker's host memory for the joined inputs, reused from batch to batch (no fresh pages to fault
  // in for every batch) while nothing else holds it.
  struct Staging {
    std::shared_ptr<void> memory;
    std::size_t bytes = 0;
  };
  using StagingMap = std::map<std::string, Staging>;
  void work();
  void run_batch(std::vector<std::unique_ptr<Job>>& jobs, StagingMap& staging);
  static Tensor staged(StagingMap& staging, const std::string& name, const Shape& shape, DType dtype);

  BatcherOptions options_;
  std::function<TensorMap(const TensorMap&)> run_;
  std::function<void(std::int64_t)> on_batch_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Job>> queue_;
  bool stopping_ = false;
  std::atomic<bool> batchable_{true};
  std::vector<std::thread> workers_;
};

}  // namespace espresso::serve
