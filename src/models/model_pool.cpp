#include "espresso/model_pool.h"

#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "backends/registry.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/package.h"

namespace espresso {
namespace {

std::string describe_bytes(std::size_t bytes) {
  return std::to_string(bytes) + " bytes (" + std::to_string((bytes + (1 << 19)) >> 20) + " MiB)";
}

// A resident model (whose host weights may point into a mapped package) and the sessions that
// finished their requests.
struct LoadedModel {
  std::shared_ptr<const Model> model;
  std::size_t bytes = 0;
  std::mutex idle_mutex;
  std::vector<std::unique_ptr<Session>> idle;
};

enum class Residency { absent, loading, resident };

struct ModelEntry {
  std::string path;
  std::string weights_path;
  Residency residency = Residency::absent;
  std::shared_ptr<LoadedModel> loaded;
  int users = 0;
  std::uint64_t last_use = 0;
  bool loaded_before = false;
};

}  // namespace

struct ModelPool::Shared {
  ModelPoolOptions options;
  mutable std::mutex mutex;
  std::condition_variable changed;
  std::map<std::string, ModelEntry> models;
  std::uint64_t clock = 0;
  ModelPoolStats stats;

  ModelEntry& entry(const std::string& name) {
    auto it = models.find(name);
    if (it == models.end()) throw ModelError("model pool: no model named '" + name + "'; add() it first");
    return it->second;
  }

  Graph read_graph(const ModelEntry& entry) const {
    if (std::filesystem::path(entry.path).extension() == ".esp") {
      return load_package(entry.path, PackageLoadOptions{options.verify});
    }
    return load_model(entry.path, entry.weights_path);
  }

  // Loads a model that this thread marked as loading; returns it resident with one user.
  std::shared_ptr<LoadedModel> load(const std::string& name, ModelEntry& entry) {
    try {
      auto model = std::make_shared<LoadedModel>();
      Graph graph = read_graph(entry);
      model->bytes = Model::bytes_needed(graph, options.device);
      if (model->bytes > options.budget_bytes) {
        throw ModelError("model pool: model '" + name + "' (" + entry.path + ") needs " +
                         describe_bytes(model->bytes) + ", more than the whole budget of " +
                         describe_bytes(options.budget_bytes));
      }
      reserve(model->bytes);
      try {
        model->model = std::make_shared<const Model>(std::move(graph), options.device);
      } catch (...) {
        unreserve(model->bytes);
        throw;
      }
      std::lock_guard lock(mutex);
      entry.residency = Residency::resident;
      entry.loaded = model;
      entry.users = 1;
      entry.last_use = ++clock;
      ++stats.loads;
      if (entry.loaded_before) ++stats.reloads;
      entry.loaded_before = true;
      ++stats.resident_models;
      changed.notify_all();
      return model;
    } catch (...) {
      std::lock_guard lock(mutex);
      entry.residency = Residency::absent;
      changed.notify_all();
      throw;
    }
  }

  // Makes room for `bytes` by evicting the least recently used models that no request holds,
  // waiting for releases while the held ones fill the budget.
  void reserve(std::size_t bytes) {
    std::unique_lock lock(mutex);
    while (stats.resident_bytes + bytes > options.budget_bytes) {
      ModelEntry* victim = nullptr;
      for (auto& [name, candidate] : models) {
        if (candidate.residency == Residency::resident && candidate.users == 0 &&
            (victim == nullptr || candidate.last_use < victim->last_use)) {
          victim = &candidate;
        }
      }
      if (victim == nullptr) {
        changed.wait(lock);
        continue;
      }
      std::shared_ptr<LoadedModel> evicted = std::move(victim->loaded);
      victim->residency = Residency::absent;
      --stats.resident_models;
      ++stats.evictions;
      // Freed outside the lock (contexts synchronise their streams), and counted as resident until
      // it is gone, so the budget holds for the memory actually in use.
      lock.unlock();
      const std::size_t freed = evicted->bytes;
      evicted.reset();
      lock.lock();
      stats.resident_bytes -= freed;
      changed.notify_all();
    }
    stats.resident_bytes += bytes;
    stats.peak_resident_bytes = std::max(stats.peak_resident_bytes, stats.resident_bytes);
  }

  void unreserve(std::size_t bytes) {
    std::lock_guard lock(mutex);
    stats.resident_bytes -= bytes;
    changed.notify_all();
  }

  std::unique_ptr<Session> context_for(LoadedModel& model, std::int64_t batch) {
    {
      std::lock_guard lock(model.idle_mutex);
      if (!model.idle.empty()) {
        auto chosen = model.idle.end() - 1;
        const auto& inputs = model.model->graph().inputs;
        if (batch > 0 && !inputs.empty()) {
          bool planned_for_batch = false;
          for (auto it = model.idle.begin(); it != model.idle.end(); ++it) {
            const Shape shape = (*it)->input_shape(inputs.front().name);
            if (shape.rank() > 0 && shape[0] == batch) {
              chosen = it;
              planned_for_batch = true;
            }
          }
          // None was planned for this batch: a new context while the idle ones leave room for it, so
          // that one context per batch size builds up instead of the same few replanning at every switch.
          if (!planned_for_batch && static_cast<int>(model.idle.size()) < options.max_idle_contexts)
            chosen = model.idle.end();
        }
        if (chosen != model.idle.end()) {
          std::unique_ptr<Session> session = std::move(*chosen);
          model.idle.erase(chosen);
          return session;
        }
      }
    }
    auto session = std::make_unique<Session>(model.model, options.session);
    std::lock_guard lock(mutex);
    ++stats.contexts_created;
    return session;
  }

  void release(const std::string& name, std::shared_ptr<LoadedModel> model, std::unique_ptr<Session> session) {
    if (session) {
      std::lock_guard lock(model->idle_mutex);
      if (static_cast<int>(model->idle.size()) < options.max_idle_contexts)
        model->idle.push_back(std::move(session));
    }
    // Dropped before the model can be evicted, so eviction frees everything the model holds.
    session.reset();
    model.reset();
    std::lock_guard lock(mutex);
    ModelEntry& released = models.at(name);
    --released.users;
    released.last_use = ++clock;
    changed.notify_all();
  }
};

// ---- ModelRequest ---------------------------------------------------------------------------

struct ModelRequest::State {
  std::shared_ptr<ModelPool::Shared> pool;
  std::string name;
  std::shared_ptr<LoadedModel> model;
  std::unique_ptr<Session> session;
  // Cleared when a forward() fails: the context may hold a broken plan or capture, so it is dropped.
  bool reusable = true;

  ~State() {
    if (!reusable) session.reset();
    if (model) pool->release(name, std::move(model), std::move(session));
  }
};

ModelRequest::ModelRequest(std::unique_ptr<State> state) : state_(std::move(state)) {}
ModelRequest::ModelRequest(ModelRequest&&) noexcept = default;
ModelRequest& ModelRequest::operator=(ModelRequest&&) noexcept = default;
ModelRequest::~ModelRequest() = default;

namespace {

[[noreturn]] void fail_released() { throw ModelError("model pool: the request has been released"); }

}  // namespace

const std::string& ModelRequest::model() const {
  if (!state_) fail_released();
  return state_->name;
}

Session& ModelRequest::session() {
  if (!state_) fail_released();
  return *state_->session;
}

Tensor& ModelRequest::input(const std::string& name) { return session().input(name); }

void ModelRequest::forward() {
  try {
    session().forward();
  } catch (...) {
    if (state_) state_->reusable = false;
    throw;
  }
}

std::map<std::string, Tensor> ModelRequest::forward(const std::map<std::string, Tensor>& inputs) {
  try {
    return session().run(inputs);
  } catch (...) {
    if (state_) state_->reusable = false;
    throw;
  }
}

const Tensor& ModelRequest::output(const std::string& name) const {
  if (!state_) fail_released();
  return state_->session->output(name);
}

void ModelRequest::release() { state_.reset(); }

// ---- ModelPool ------------------------------------------------------------------------------

ModelPool::ModelPool(ModelPoolOptions options) : shared_(std::make_shared<Shared>()) {
  if (options.budget_bytes == 0) throw ModelError("model pool: the budget must be more than 0 bytes");
  require_device(options.device);
  shared_->options = std::move(options);
  shared_->stats.budget_bytes = shared_->options.budget_bytes;
}

ModelPool::~ModelPool() = default;

void ModelPool::add(const std::string& name, const std::string& path, const std::string& weights_path) {
  if (!std::filesystem::is_regular_file(path)) {
    throw FileError("model pool: model '" + name + "': " + path + " is not a readable file");
  }
  std::lock_guard lock(shared_->mutex);
  ModelEntry entry;
  entry.path = path;
  entry.weights_path = weights_path;
  if (!shared_->models.emplace(name, std::move(entry)).second) {
    throw ModelError("model pool: a model named '" + name + "' is already in the pool");
  }
}

std::vector<std::string> ModelPool::models() const {
  std::lock_guard lock(shared_->mutex);
  std::vector<std::string> names;
  for (const auto& [name, entry] : shared_->models) names.push_back(name);
  return names;
}

bool ModelPool::resident(const std::string& name) const {
  std::lock_guard lock(shared_->mutex);
  return shared_->entry(name).residency == Residency::resident;
}

ModelRequest ModelPool::acquire(const std::string& name) { return acquire(name, 0); }

ModelRequest ModelPool::acquire(const std::string& name, std::int64_t batch) {
  Shared& shared = *shared_;
  auto state = std::make_unique<ModelRequest::State>();
  state->pool = shared_;
  state->name = name;
  ModelEntry* entry = nullptr;
  {
    std::unique_lock lock(shared.mutex);
    entry = &shared.entry(name);
    ++shared.stats.requests;
    shared.changed.wait(lock, [&] { return entry->residency != Residency::loading; });
    if (entry->residency == Residency::resident) {
      ++entry->users;
      entry->last_use = ++shared.clock;
      ++shared.stats.hits;
      state->model = entry->loaded;
    } else {
      entry->residency = Residency::loading;
    }
  }
  if (!state->model) state->model = shared.load(name, *entry);
  // From here the state holds the model; a failure below releases it.
  state->session = shared.context_for(*state->model, batch);
  return ModelRequest(std::move(state));
}

int ModelPool::evict_idle() {
  Shared& shared = *shared_;
  std::vector<std::shared_ptr<LoadedModel>> evicted;
  {
    std::lock_guard lock(shared.mutex);
    for (auto& [name, entry] : shared.models) {
      if (entry.residency != Residency::resident || entry.users != 0) continue;
      evicted.push_back(std::move(entry.loaded));
      entry.residency = Residency::absent;
      --shared.stats.resident_models;
      ++shared.stats.evictions;
    }
  }
  // Freed outside the lock and counted as resident until gone, as reserve() does.
  std::size_t freed = 0;
  for (auto& model : evicted) {
    freed += model->bytes;
    model.reset();
  }
  std::lock_guard lock(shared.mutex);
  shared.stats.resident_bytes -= freed;
  shared.changed.notify_all();
  return static_cast<int>(evicted.size());
}

ModelPoolStats ModelPool::stats() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->stats;
}

const ModelPoolOptions& ModelPool::options() const { return shared_->options; }

}  // namespace espresso
