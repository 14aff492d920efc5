// ModelPool: many named models kept resident on one device under a byte budget, served to any
// number of threads at once.
//
// Thread safety:
//  - Every ModelPool member may be called from any thread at the same time.
//  - A ModelRequest belongs to one thread at a time: its members must not be called concurrently
//    with each other. Different requests, for the same model or different ones, run concurrently,
//    each on its own execution context (Net: stream, activation arena, plan, CUDA graph); the
//    model's weights are shared and never written.
//  - Tensors that a request returns by reference (input(), output()) live in the request's context:
//    valid until the next forward() on that request or until the request is released, after which
//    another request may reuse the context. forward(inputs) returns CPU copies that the caller owns.
//  - Requests may outlive the pool; a model stays resident while any request holds it.
//
// Budget: the weights of the resident models (device bytes on a GPU; on the CPU the host bytes of
// the weights, which an .esp package maps without copying) never exceed budget_bytes. Acquiring a
// model that is not resident loads it, first evicting the least recently used models that no request
// holds; when the held models leave no room, acquire() waits until requests are released. So a
// thread must not hold a request while acquiring another model unless the budget fits both.
// Activation arenas and the contexts' library handles are not part of the budget.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "espresso/model.h"
#include "espresso/tensor.h"

namespace espresso {

struct ModelPoolOptions {
  // Where the models live and run.
  Device device = Device::cpu();
  // Bytes of weights that may be resident at once; a model larger than this cannot be loaded.
  std::size_t budget_bytes = 0;
  // Options for every session of a model.
  SessionOptions session;
  // Check .esp checksums on every load (and reload after eviction).
  bool verify = true;
  // Idle contexts kept per resident model, so that switching back to a model needs no planning.
  int max_idle_contexts = 4;
};

struct ModelPoolStats {
  std::size_t budget_bytes = 0;
  std::size_t resident_bytes = 0;
  std::size_t peak_resident_bytes = 0;  // the highest resident_bytes ever reached
  int resident_models = 0;
  std::int64_t requests = 0;
  std::int64_t hits = 0;     // requests that found their model resident
  std::int64_t loads = 0;    // loads from file, first ones included
  std::int64_t reloads = 0;  // loads of a model that had been evicted
  std::int64_t evictions = 0;
  std::int64_t contexts_created = 0;
};

class ModelPool;

// One request: exclusive use of an execution context of a resident model. Releasing it (destruction
// or release()) returns the context to the model and lets the model be evicted again.
class ModelRequest {
 public:
  ModelRequest(ModelRequest&&) noexcept;
  ModelRequest& operator=(ModelRequest&&) noexcept;
  ~ModelRequest();

  const std::string& model() const;
  // The session; any of its members may be used (reshape, input, forward, output, summary).
  Session& session();
  Tensor& input(const std::string& name);
  void forward();
  // Copies the inputs in, runs, and returns every graph output as a CPU tensor.
  std::map<std::string, Tensor> forward(const std::map<std::string, Tensor>& inputs);
  // A graph output of the last forward(), on the pool's device.
  const Tensor& output(const std::string& name) const;
  void release();

 private:
  friend class ModelPool;
  struct State;
  explicit ModelRequest(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

class ModelPool {
 public:
  // Throws DeviceError when the device is unusable, ModelError for a zero budget.
  explicit ModelPool(ModelPoolOptions options);
  ~ModelPool();
  ModelPool(const ModelPool&) = delete;
  ModelPool& operator=(const ModelPool&) = delete;

  // Registers a model file (.esp, or any format load_model reads) under `name`; nothing is loaded
  // until it is first acquired. Throws ModelError when the name is taken, FileError when the file is
  // missing.
  void add(const std::string& name, const std::string& path, const std::string& weights_path = "");
  std::vector<std::string> models() const;
  bool resident(const std::string& name) const;

  // A context of the model, loading the model first when it is not resident. Throws ModelError for
  // unknown names and models larger than the budget, and whatever loading the file throws.
  ModelRequest acquire(const std::string& name);
  // The same, preferring an idle context last planned for inputs of this batch size (dimension 0), so a
  // caller that runs a few batch sizes (a batching server) does not replan a context at every switch.
  ModelRequest acquire(const std::string& name, std::int64_t batch);

  // Evicts every resident model that no request holds; returns how many. For a caller that ran out of
  // device memory outside the budget's accounting (activations, library workspaces) and retries.
  int evict_idle();

  ModelPoolStats stats() const;
  const ModelPoolOptions& options() const;

 private:
  friend class ModelRequest;
  struct Shared;
  std::shared_ptr<Shared> shared_;
};

}  // namespace espresso
