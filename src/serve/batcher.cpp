#include "serve/batcher.h"

#include <algorithm>
#include <cstring>

#include "espresso/host_staging.h"
#include "serve/errors.h"

namespace espresso::serve {

namespace {

// Host staging a model's batcher keeps for reuse beyond what its workers need.
constexpr std::size_t kSpareBytes = std::size_t{256} << 20;

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
  if (options_.workers < 1) options_.workers = 1;
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { work(); });
}

Batcher::~Batcher() { shutdown(); }

void Batcher::Batch::zero_rows(std::int64_t first, std::int64_t count) const {
  for (std::size_t i = 0; i < layout->size(); ++i)
    std::memset(row(i, first), 0, static_cast<std::size_t>(count) * (*layout)[i].row_bytes);
}

Batcher::Staging Batcher::take_staging(KeyInfo& info, std::int64_t rows) {
  for (auto it = info.spare.begin(); it != info.spare.end(); ++it) {
    if (it->rows >= rows) {
      Staging staging = std::move(*it);
      info.spare.erase(it);
      for (const Layout& layout : info.layout) info.spare_bytes -= static_cast<std::size_t>(staging.rows) * layout.row_bytes;
      return staging;
    }
  }
  Staging staging;
  staging.rows = rows;
  for (const Layout& layout : info.layout)
    staging.memory.push_back(allocate_host_staging(static_cast<std::size_t>(rows) * layout.row_bytes, options_.device));
  return staging;
}

std::future<TensorMap> Batcher::submit(PendingInputs inputs) {
  std::vector<Entry> entries;
  std::vector<const PendingInput*> sources;
  for (const auto& [name, input] : inputs) {
    entries.push_back({name, input.shape, input.dtype});
    sources.push_back(&input);
  }
  return enqueue(entries, [&](std::size_t i, void* destination) {
    if (!sources[i]->write) throw RequestError("inputs: '" + entries[i].name + "' has no values to write");
    sources[i]->write(destination);
  });
}

std::future<TensorMap> Batcher::submit(TensorMap inputs) {
  std::vector<Entry> entries;
  std::vector<const Tensor*> sources;
  for (const auto& [name, tensor] : inputs) {
    entries.push_back({name, tensor.shape(), tensor.dtype()});
    sources.push_back(&tensor);
  }
  return enqueue(entries, [&](std::size_t i, void* destination) {
    const Tensor& source = *sources[i];
    Tensor::wrap(destination, source.shape(), source.dtype()).copy_from(source);
  });
}

std::future<TensorMap> Batcher::enqueue(const std::vector<Entry>& entries,
                                        const std::function<void(std::size_t, void*)>& write) {
  if (entries.empty()) throw RequestError("inputs: the request has none");
  std::int64_t samples = -1;
  std::string key;
  for (const Entry& entry : entries) {
    if (entry.shape.rank() == 0 || entry.shape[0] < 1)
      throw RequestError("inputs: '" + entry.name + "' needs a batch of at least 1 in dimension 0");
    if (samples >= 0 && entry.shape[0] != samples)
      throw RequestError("inputs: every input must have the same batch size (dimension 0)");
    samples = entry.shape[0];
    key += entry.name + ":" + dtype_name(entry.dtype) + ":";
    for (int axis = 1; axis < entry.shape.rank(); ++axis) key += std::to_string(entry.shape[axis]) + "x";
    key += ";";
  }
  auto job = std::make_unique<Job>();
  Job& submitted = *job;
  job->samples = samples;
  std::future<TensorMap> result = job->result.get_future();
  Batch* batch = nullptr;
  std::vector<char*> destinations(entries.size());
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw UnavailableError("the server is shutting down");
    KeyInfo& info = keys_[key];
    if (info.layout.empty()) {
      for (const Entry& entry : entries) {
        Layout layout{entry.name, entry.shape.dims(), entry.dtype, 0};
        layout.sample_dims.erase(layout.sample_dims.begin());
        layout.row_bytes = static_cast<std::size_t>(Shape(layout.sample_dims).numel()) * dtype_size(entry.dtype);
        info.layout.push_back(std::move(layout));
      }
    }
    auto open = open_.find(key);
    if (open != open_.end() && (!batchable_ || open->second->samples + samples > open->second->staging.rows)) {
      open->second->open = false;
      open_.erase(open);
      open = open_.end();
    }
    if (open != open_.end()) {
      batch = open->second;
    } else {
      auto made = std::make_unique<Batch>();
      made->key = key;
      made->layout = &info.layout;
      made->deadline = std::chrono::steady_clock::now() + options_.max_queue_delay;
      made->staging = take_staging(info, std::max<std::int64_t>(samples, options_.max_batch));
      made->open = batchable_ && samples < options_.max_batch;
      batch = made.get();
      queue_.push_back(std::move(made));
      if (batch->open) open_[key] = batch;
    }
    job->first = batch->samples;
    batch->samples += samples;
    ++batch->writers;
    for (std::size_t i = 0; i < entries.size(); ++i) destinations[i] = batch->row(i, job->first);
    if (batch->open && batch->samples >= options_.max_batch) {
      batch->open = false;
      open_.erase(key);
    }
    batch->jobs.push_back(std::move(job));
  }
  wake_.notify_all();
  // The rows are this request's alone: written outside the lock, by as many threads as submit at once.
  try {
    for (std::size_t i = 0; i < entries.size(); ++i) write(i, destinations[i]);
  } catch (...) {
    submitted.error = std::current_exception();
  }
  bool last = false;
  {
    std::lock_guard lock(mutex_);
    last = --batch->writers == 0;
  }
  if (last) wake_.notify_all();
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
  std::unique_lock lock(mutex_);
  for (;;) {
    if (queue_.empty()) {
      if (stopping_) return;
      wake_.wait(lock);
      continue;
    }
    // The oldest batch that is closed (full) or whose first request has waited the queue delay.
    const auto now = std::chrono::steady_clock::now();
    auto chosen = queue_.end();
    auto earliest = std::chrono::steady_clock::time_point::max();
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      const Batch& candidate = **it;
      if (!candidate.open || stopping_ || !batchable_ || candidate.deadline <= now) {
        chosen = it;
        break;
      }
      earliest = std::min(earliest, candidate.deadline);
    }
    if (chosen == queue_.end()) {
      wake_.wait_until(lock, earliest);
      continue;
    }
    std::unique_ptr<Batch> batch = std::move(*chosen);
    queue_.erase(chosen);
    if (batch->open) {
      batch->open = false;
      open_.erase(batch->key);
    }
    wake_.wait(lock, [&] { return batch->writers == 0; });
    lock.unlock();
    run_batch(*batch);
    // Memory that a model still holds (it kept its input tensor) is left to it; the rest is reused.
    bool reusable = true;
    for (const auto& memory : batch->staging.memory) reusable = reusable && memory.use_count() == 1;
    if (!reusable) batch->staging = {};
    lock.lock();
    if (reusable) {
      // Kept for the next batches: enough for the workers and the batches filling meanwhile, and for
      // unbatched serving (many one-request batches at once) up to kSpareBytes, so that no request
      // allocates (on CUDA: page-locks) fresh memory once the server is warm.
      KeyInfo& info = keys_[batch->key];
      std::size_t bytes = 0;
      for (const Layout& layout : info.layout) bytes += static_cast<std::size_t>(batch->staging.rows) * layout.row_bytes;
      if (info.spare.size() < static_cast<std::size_t>(options_.workers) + 2 || info.spare_bytes + bytes <= kSpareBytes) {
        info.spare.push_back(std::move(batch->staging));
        info.spare_bytes += bytes;
      }
    }
  }
}

void Batcher::run_batch(Batch& batch) {
  const std::vector<Layout>& layout = *batch.layout;
  // Rows [first, first + count) of every input, as tensors over the staging memory (no copy).
  const auto inputs_for = [&](std::int64_t first, std::int64_t count) {
    TensorMap inputs;
    for (std::size_t i = 0; i < layout.size(); ++i) {
      std::vector<std::int64_t> dims{count};
      dims.insert(dims.end(), layout[i].sample_dims.begin(), layout[i].sample_dims.end());
      inputs.emplace(layout[i].name, Tensor::wrap(batch.row(i, first), Shape(dims), layout[i].dtype, Device::cpu(),
                                                  batch.staging.memory[i]));
    }
    return inputs;
  };
  const auto run_alone = [&](Job& job) {
    try {
      TensorMap outputs = run_(inputs_for(job.first, job.samples));
      on_batch_(job.samples);
      job.result.set_value(std::move(outputs));
    } catch (...) {
      job.result.set_exception(std::current_exception());
    }
  };
  std::vector<Job*> jobs;
  for (const auto& job : batch.jobs) {
    if (!job->error) {
      jobs.push_back(job.get());
      continue;
    }
    // Its write failed: its rows become zeros (the batch is computed anyway), it gets the error.
    batch.zero_rows(job->first, job->samples);
    job->result.set_exception(job->error);
  }
  if (jobs.empty()) return;
  const std::int64_t total = batch.samples;
  std::int64_t padded = total;
  if (options_.pad_to_buckets && batchable_) {
    padded = 1;
    while (padded < total) padded *= 2;
    if (padded > options_.max_batch) padded = std::max<std::int64_t>(total, options_.max_batch);
    padded = std::min(padded, batch.staging.rows);
  }
  if (batch.jobs.size() == 1 && padded == total) return run_alone(*jobs.front());
  // Zeros for the padding only: every other row was written once, by its request.
  batch.zero_rows(total, padded - total);
  TensorMap outputs;
  try {
    outputs = run_(inputs_for(0, padded));
  } catch (const UnavailableError&) {
    for (Job* job : jobs) job->result.set_exception(std::current_exception());
    return;
  } catch (const ModelLoadError&) {
    for (Job* job : jobs) job->result.set_exception(std::current_exception());
    return;
  } catch (const std::exception&) {
    // A model with a fixed batch (a Reshape to a constant shape, say) fails on a larger one: from now
    // on its requests run one by one.
    batchable_ = false;
    for (Job* job : jobs) run_alone(*job);
    return;
  }
  bool batched = true;
  for (const auto& [name, tensor] : outputs) {
    if (tensor.shape().rank() == 0 || tensor.shape()[0] != padded) batched = false;
  }
  if (!batched) {
    batchable_ = false;
    for (Job* job : jobs) run_alone(*job);
    return;
  }
  on_batch_(total);
  for (Job* job : jobs) {
    TensorMap own;
    for (const auto& [name, tensor] : outputs) own.emplace(name, rows(tensor, job->first, job->samples));
    job->result.set_value(std::move(own));
  }
}

}  // namespace espresso::serve
