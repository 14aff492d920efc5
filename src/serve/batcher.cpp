#include "serve/batcher.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "serve/errors.h"

namespace espresso::serve {

namespace {

// Rows [first, first + count) of dimension 0.
Tensor rows(const Tensor& tensor, std::int64_t first, std::int64_t count) {
  std::vector<std::int64_t> dims = tensor.shape().dims();
  const std::size_t row_bytes =
      tensor.shape().rank() > 0 && dims[0] > 0 ? tensor.bytes() / static_cast<std::size_t>(dims[0]) : 0;
  dims[0] = count;
  Tensor out = Tensor::empty(Shape(dims), tensor.dtype());
  std::memcpy(out.raw(), static_cast<const char*>(tensor.raw()) + static_cast<std::size_t>(first) * row_bytes,
              static_cast<std::size_t>(count) * row_bytes);
  return out;
}

}  // namespace

Batcher::Batcher(BatcherOptions options, std::function<TensorMap(const TensorMap&)> run,
                 std::function<void(std::int64_t)> on_batch)
    : options_(options), run_(std::move(run)), on_batch_(std::move(on_batch)) {
  if (options_.max_batch < 1) options_.max_batch = 1;
  for (int i = 0; i < std::max(1, options_.workers); ++i) workers_.emplace_back([this] { work(); });
}

Batcher::~Batcher() { shutdown(); }

Tensor Batcher::staged(StagingMap& staging, const std::string& name, const Shape& shape, DType dtype) {
  const std::size_t bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
  Staging& slot = staging[name];
  if (!slot.memory || slot.memory.use_count() > 1 || slot.bytes < bytes) {
    constexpr std::size_t kAlign = 64;
    const std::size_t rounded = std::max<std::size_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
    void* memory = std::aligned_alloc(kAlign, rounded);
    if (memory == nullptr) throw std::bad_alloc();
    slot.memory = std::shared_ptr<void>(memory, [](void* p) { std::free(p); });
    slot.bytes = rounded;
  }
  return Tensor::wrap(slot.memory.get(), shape, dtype, Device::cpu(), slot.memory);
}

std::future<TensorMap> Batcher::submit(TensorMap inputs) {
  auto job = std::make_unique<Job>();
  job->samples = -1;
  for (const auto& [name, tensor] : inputs) {
    const Shape& shape = tensor.shape();
    const std::int64_t samples = shape.rank() > 0 ? shape[0] : 1;
    if (job->samples >= 0 && samples != job->samples)
      throw RequestError("inputs: every input must have the same batch size (dimension 0)");
    job->samples = samples;
    job->key += name + ":";
    for (int axis = 1; axis < shape.rank(); ++axis) job->key += std::to_string(shape[axis]) + "x";
    job->key += ";";
  }
  job->inputs = std::move(inputs);
  job->arrived = std::chrono::steady_clock::now();
  std::future<TensorMap> result = job->result.get_future();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw UnavailableError("the server is shutting down");
    queue_.push_back(std::move(job));
  }
  wake_.notify_all();
  return result;
}

void Batcher::shutdown() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  workers_.clear();
}

void Batcher::work() {
  StagingMap staging;
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;
    // Wait for companions of the oldest request until the batch is full or its delay is spent.
    const auto deadline = queue_.front()->arrived + options_.max_queue_delay;
    while (!stopping_ && !queue_.empty()) {
      std::int64_t samples = 0;
      for (const auto& job : queue_) {
        if (job->key == queue_.front()->key) samples += job->samples;
      }
      if (samples >= options_.max_batch || !batchable_) break;
      if (wake_.wait_until(lock, deadline) == std::cv_status::timeout) break;
    }
    if (queue_.empty()) continue;
    const std::string key = queue_.front()->key;
    std::vector<std::unique_ptr<Job>> batch;
    std::int64_t samples = 0;
    for (auto it = queue_.begin(); it != queue_.end();) {
      if ((*it)->key != key) {
        ++it;
        continue;
      }
      if (!batch.empty() && (!batchable_ || samples + (*it)->samples > options_.max_batch)) break;
      samples += (*it)->samples;
      batch.push_back(std::move(*it));
      it = queue_.erase(it);
    }
    lock.unlock();
    run_batch(batch, staging);
    lock.lock();
  }
}

void Batcher::run_batch(std::vector<std::unique_ptr<Job>>& jobs, StagingMap& staging) {
  const auto run_alone = [this](Job& job) {
    try {
      TensorMap outputs = run_(job.inputs);
      on_batch_(job.samples);
      job.result.set_value(std::move(outputs));
    } catch (...) {
      job.result.set_exception(std::current_exception());
    }
  };
  std::int64_t total = 0;
  for (const auto& job : jobs) total += job->samples;
  std::int64_t padded = total;
  if (options_.pad_to_buckets) {
    padded = 1;
    while (padded < total) padded *= 2;
    if (padded > options_.max_batch) padded = std::max<std::int64_t>(total, options_.max_batch);
  }
  if (jobs.size() == 1 && padded == total) return run_alone(*jobs.front());
  TensorMap outputs;
  try {
    TensorMap inputs;
    for (const auto& [name, first] : jobs.front()->inputs) {
      std::vector<std::int64_t> dims = first.shape().dims();
      dims[0] = padded;
      // Every byte is written once: the requests' rows, then zeros for the padding only.
      Tensor joined = staged(staging, name, Shape(dims), first.dtype());
      char* const begin = static_cast<char*>(joined.raw());
      char* cursor = begin;
      for (const auto& job : jobs) {
        const Tensor& part = job->inputs.at(name);
        std::memcpy(cursor, part.raw(), part.bytes());
        cursor += part.bytes();
      }
      std::memset(cursor, 0, joined.bytes() - static_cast<std::size_t>(cursor - begin));
      inputs.emplace(name, std::move(joined));
    }
    outputs = run_(inputs);
  } catch (const UnavailableError&) {
    for (const auto& job : jobs) job->result.set_exception(std::current_exception());
    return;
  } catch (const ModelLoadError&) {
    for (const auto& job : jobs) job->result.set_exception(std::current_exception());
    return;
  } catch (const std::exception&) {
    // A model with a fixed batch (a Reshape to a constant shape, say) fails on a larger one: from now
    // on its requests run one by one.
    batchable_ = false;
    for (const auto& job : jobs) run_alone(*job);
    return;
  }
  bool batched = true;
  for (const auto& [name, tensor] : outputs) {
    if (tensor.shape().rank() == 0 || tensor.shape()[0] != padded) batched = false;
  }
  if (!batched) {
    batchable_ = false;
    for (const auto& job : jobs) run_alone(*job);
    return;
  }
  on_batch_(total);
  std::int64_t first = 0;
  for (const auto& job : jobs) {
    TensorMap own;
    for (const auto& [name, tensor] : outputs) own.emplace(name, rows(tensor, first, job->samples));
    first += job->samples;
    job->result.set_value(std::move(own));
  }
}

}  // namespace espresso::serve
