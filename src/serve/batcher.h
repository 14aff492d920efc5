// Dynamic batching for one model. Requests with the same input names and per-sample shapes share an
// open batch: each request reserves its rows (its samples along dimension 0) in the batch's host staging
// memory and the submitting thread writes its inputs straight into them, so the bytes of many requests
// are copied by many threads at once and exactly once. A worker takes a batch once it is full (max_batch
// samples) or its oldest request has waited the queue delay, waits for the rows still being written, runs
// the batch and splits the outputs back by rows. A model whose outputs do not carry the batch in
// dimension 0, or that fails at a larger batch, gets each request run alone from then on (its rows of the
// staging memory, no copy). `run` receives the batch size as dimension 0 of its inputs (the padded one
// when padding).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
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
  // The device the batches go to: their staging memory is the host memory that copies to it fastest
  // (allocate_host_staging: page-locked for CUDA, one DMA per input and batch).
  Device device = Device::cpu();
};

// One input of a request: its shape (dimension 0: the request's samples), its dtype, and what writes
// its shape.numel() values to the memory given (the request's rows of the batch). `write` runs in the
// thread that submits, before submit() returns.
struct PendingInput {
  Shape shape;
  DType dtype = DType::f32;
  std::function<void(void* destination)> write;
};
using PendingInputs = std::map<std::string, PendingInput>;

class Batcher {
 public:
  // `run` computes a batch (inputs concatenated) and returns every output on the CPU; `on_batch` hears
  // the samples of each batch run.
  Batcher(BatcherOptions options, std::function<TensorMap(const TensorMap&)> run,
          std::function<void(std::int64_t)> on_batch);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues one request (every input with the same dimension 0, its sample count) and writes its inputs
  // into the batch; the future holds its outputs or the exception the run (or a write) threw.
  std::future<TensorMap> submit(PendingInputs inputs);
  // The same for CPU tensors, copied into the batch.
  std::future<TensorMap> submit(TensorMap inputs);
  // Runs what is queued, then stops the workers.
  void shutdown();

 private:
  // Where one input's rows go: per-sample dims and dtype, bytes per sample.
  struct Layout {
    std::string name;
    std::vector<std::int64_t> sample_dims;
    DType dtype = DType::f32;
    std::size_t row_bytes = 0;
  };
  struct Job {
    std::int64_t samples = 0;
    std::int64_t first = 0;    // its first row in the batch
    std::exception_ptr error;  // a write failed: the job gets this instead of outputs
    std::promise<TensorMap> result;
  };
  // One staging buffer per input, `rows` samples each; reused from batch to batch while nothing else
  // holds it (a model may keep its input tensor).
  struct Staging {
    std::int64_t rows = 0;
    std::vector<std::shared_ptr<void>> memory;  // by layout index
  };
  struct Batch {
    std::string key;
    std::int64_t samples = 0;  // rows reserved
    int writers = 0;           // requests still writing their rows
    bool open = true;          // takes more requests
    std::chrono::steady_clock::time_point deadline;
    const std::vector<Layout>* layout = nullptr;  // its key's (map nodes stay put)
    std::vector<std::unique_ptr<Job>> jobs;
    Staging staging;
    // Where row `first` of input i starts in the staging memory.
    char* row(std::size_t i, std::int64_t first) const {
      return static_cast<char*>(staging.memory[i].get()) + static_cast<std::size_t>(first) * (*layout)[i].row_bytes;
    }
    // Rows [first, first + count) of every input set to zero.
    void zero_rows(std::int64_t first, std::int64_t count) const;
  };
  struct KeyInfo {
    std::vector<Layout> layout;
    std::vector<Staging> spare;
    std::size_t spare_bytes = 0;
  };
  struct Entry {
    std::string name;
    Shape shape;
    DType dtype;
  };
  // Reserves the rows of a request with these inputs (sorted by name) and calls write(i, rows) for each.
  std::future<TensorMap> enqueue(const std::vector<Entry>& entries,
                                 const std::function<void(std::size_t, void*)>& write);
  Staging take_staging(KeyInfo& info, std::int64_t rows);
  void work();
  void run_batch(Batch& batch);

  BatcherOptions options_;
  std::function<TensorMap(const TensorMap&)> run_;
  std::function<void(std::int64_t)> on_batch_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Batch>> queue_;  // oldest first, open ones included
  std::map<std::string, Batch*> open_;        // the open batch of each key
  std::map<std::string, KeyInfo> keys_;
  bool stopping_ = false;
  std::atomic<bool> batchable_{true};
  std::vector<std::thread> workers_;
};

}  // namespace espresso::serve
