// The inference server (docs/serve.md): named models resident in a ModelPool under a memory budget,
// served over HTTP with the Open Inference Protocol (KServe v2 REST, JSON tensors and the binary-data
// extension), dynamic batching per model, back-pressure (429), Prometheus metrics, and the store's
// catalog JSON for the served models.
//
// Thread safety: every Server member may be called from any thread; stop() from a signal-waiting thread
// is the intended use.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "espresso/errors.h"
#include "espresso/model.h"
#include "espresso/tensor.h"

namespace espresso {

// A server that cannot start: a bad option, a port that cannot be bound, a model spec that names
// nothing.
class ServeError : public Error {
 public:
  using Error::Error;
};

namespace serve {

// One served model. Either `path` (a file load_model reads; `weights` for a Caffe .caffemodel) or
// `reference` (REGISTRY/NAME:TAG, pulled through the store's cache on first request).
struct ModelSpec {
  std::string name;
  std::string path;
  std::string weights;
  std::string reference;

  // "NAME=PATH", "NAME=PROTOTXT,CAFFEMODEL", "NAME=REF" or a bare "REF" / "PATH" (the name is then the
  // repository's last component, or the file's stem). Throws ServeError naming the text.
  static ModelSpec parse(const std::string& text);
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (see Server::port())
  Device device = Device::cpu();
  std::size_t memory_budget_bytes = std::size_t{1} << 30;
  // Dynamic batching: at most this many samples run as one batch; a batch waits at most this long
  // for more requests after its first one arrived. max_batch 1 turns batching off.
  int max_batch = 32;
  std::chrono::microseconds max_queue_delay{2000};
  // Inference requests accepted at once (queued or running, all models together); more get 429.
  int max_concurrency = 256;
  // Batches of one model that may run at once (each on its own pool context).
  int workers_per_model = 1;
  // Zero-pad batches to powers of two (at most max_batch) so each context keeps a plan (and a CUDA
  // graph) per size instead of replanning for every batch size; costs the padded rows' compute.
  enum class PadBatches { on_gpu, always, never };
  PadBatches pad_batches = PadBatches::on_gpu;
  // Worker threads of each session's CPU kernels; 0 shares the process's pool.
  int session_threads = 0;
  std::size_t max_body_bytes = 64 << 20;  // larger bodies get 413
  std::chrono::seconds read_timeout{10};  // a client slower than this is dropped
  std::chrono::seconds write_timeout{10};
  int http_threads = 128;  // connections served at once (keep-alive holds one each)
  int top_k = 5;           // labels returned by the image route by default

  // The context model (docs/context_model.md, docs/serve.md). Requests may carry a context in the
  // X-Espresso-Context header (a JSON object: time, location, app, recent).
  // Non-empty: every successful inference request with a context appends (context, model) to this
  // crash-safe request log (RequestLog of espresso/context_model.h).
  std::string context_log;
  // Non-empty: a ContextModel package (.esp, ContextModel::save) that answers POST /api/v1/recommend
  // and drives the preloader: after each request with a context a background thread makes the
  // top-ranked models that fit the memory budget resident (PreloadWindow over the last
  // preload_window_seconds).
  std::string context_model;
  std::int64_t preload_window_seconds = 600;
  // With context_log: after every this many logged requests a background thread retrains the context
  // model from the whole log and swaps it in (0: never).
  std::int64_t retrain_every = 0;
};

class Server {
 public:
  // Throws ServeError for bad options, DeviceError for an unusable device.
  Server(ServerOptions options, std::vector<ModelSpec> models);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the socket; returns the port (the chosen one when options.port was 0). Throws ServeError.
  int bind();
  // Serves until stop(); then waits for the requests in flight to finish.
  void run();
  // bind() and run() on a background thread; returns the port.
  int start();
  // Stops accepting connections, lets the requests in flight finish, joins start()'s thread. Safe to
  // call more than once and from any thread (also while run() is active on another one).
  void stop();
  int port() const;

  // For a preloader: the names of the served models, those resident now, and a load ahead of a
  // request (throws what loading throws; unknown names: ServeError).
  std::vector<std::string> models() const;
  std::vector<std::string> resident_models() const;
  void preload(const std::string& name);
  // Context-model activity: requests logged, models loaded ahead by the preloader, retrainings done.
  struct ContextStats {
    std::int64_t logged = 0;
    std::int64_t preloads = 0;
    std::int64_t retrainings = 0;
  };
  ContextStats context_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace serve
}  // namespace espresso
