// The context model of `espresso serve` (issue #15, docs/context_model.md): requests may carry a context
// (time, coarse location, client app, the classes recently predicted for that client); the server logs
// (context, model used), trains a small classifier with espresso itself that ranks the models for a
// context, and a Preloader keeps the top-ranked models resident.
//
// Thread safety: ContextModel::rank() and every const member of Preloader may be called from any thread
// at once; observe() may run concurrently with them (the log has its own lock); train() and load() must
// not run concurrently with anything else on the same object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "espresso/errors.h"

namespace espresso::serve {

// A request body (or log line) that does not follow the context format. field() names the offending
// field as written in the JSON ("time", "recent[2]", "budget_bytes"); the empty string for the body
// itself. A server answers it with 400 and the field.
class RequestError : public ParseError {
 public:
  RequestError(std::string field, const std::string& message);
  // A message that names the field in its text; field() is empty.
  explicit RequestError(const std::string& message);
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// What is known about a request besides its input. Time is the client's local wall-clock time: an
// ISO-8601 time with an offset ("2026-12-04T08:15:00+01:00") counts as 08:15 there, "Z" and unix
// seconds as UTC.
struct RequestContext {
  // Seconds since 1970-01-01T00:00:00 of the local wall clock (unix time plus the client's offset).
  std::int64_t local_seconds = 0;
  std::string location;             // coarse: a city, a district, "home"; empty when unknown
  std::string app;                  // the client application; empty when unknown
  std::vector<std::string> recent;  // the last predicted classes, oldest first (at most kMaxRecent)

  static constexpr std::size_t kMaxRecent = 8;

  double hour_of_day() const;  // 0 <= h < 24, with minutes and seconds as fractions
  int weekday() const;         // 0 = Monday ... 6 = Sunday
  std::int64_t day() const;    // whole local days since 1970-01-01
};

// Parses a context object: {"time": ISO-8601 string or unix seconds, "location": "...", "app": "...",
// "recent": ["cat", ...]}. Every field is optional; a missing time is `now_unix` (UTC). Unknown fields
// are ignored (a request body may carry others). Throws RequestError naming the field.
RequestContext parse_request_context(const std::string& json, std::int64_t now_unix);
// The context as a JSON object in the same format (time as local ISO-8601 without an offset).
std::string to_json(const RequestContext& context);

struct Observation {
  RequestContext context;
  std::string model;
};

// The append-only request log: one JSON object per line, the context's fields plus "model". A line is
// written with a single write() (and fsync() when asked), so a crash leaves at most a torn last line;
// reading skips it, and opening the log for appending cuts it off first.
class RequestLog {
 public:
  // Creates the file when absent. Throws FileError.
  explicit RequestLog(std::string path, bool sync_each_line = false);
  ~RequestLog();
  RequestLog(const RequestLog&) = delete;
  RequestLog& operator=(const RequestLog&) = delete;

  void append(const Observation& observation);
  const std::string& path() const { return path_; }
  // How many bytes of a torn last line opening the log cut off (0 for a clean log).
  std::size_t torn_bytes_removed() const { return torn_bytes_removed_; }

 private:
  std::string path_;
  bool sync_;
  int fd_ = -1;
  std::size_t torn_bytes_removed_ = 0;
  std::mutex mutex_;
};

struct LogReadReport {
  std::size_t lines = 0;        // observations read
  bool torn_last_line = false;  // a last line without its newline that did not parse was skipped
};

// Reads a request log. A last line without a newline that does not parse is skipped (a torn write);
// any other bad line throws RequestError naming the field, wrapped as "FILE:LINE: ...".
std::vector<Observation> read_request_log(const std::string& path, LogReadReport* report = nullptr);

struct ModelScore {
  std::string model;
  double score = 0.0;  // the classifier's probability that the next request in this context asks for it
};

struct ContextModelOptions {
  // Feature buckets for the hashed strings (FNV-1a of the lower-cased string).
  int location_buckets = 64;
  int app_buckets = 32;
  int recent_buckets = 64;
  int hidden = 64;  // units of the hidden layer
  // Training: Adam over shuffled mini-batches with the solver of espresso/solver.h.
  int batch = 64;
  int epochs = 40;
  std::int64_t max_iterations = 6000;
  double learning_rate = 0.01;
  double weight_decay = 1e-4;
  std::uint64_t seed = 1;
};

struct TrainReport {
  std::size_t examples = 0;
  std::size_t models = 0;
  std::int64_t iterations = 0;
  double first_loss = 0.0;      // mean loss of the first epoch
  double final_loss = 0.0;      // mean loss of the last epoch
  double train_accuracy = 0.0;  // top-1 on the training examples after training
  double seconds = 0.0;
};

// Ranks models for a context. The classifier: features (cyclic hour, weekday one-hot, hashed buckets of
// location, app and recent classes) → InnerProduct → ReLU → InnerProduct → softmax, trained with
// SoftmaxWithLoss on (context, model) pairs.
class ContextModel {
 public:
  explicit ContextModel(ContextModelOptions options = {});
  // With a request log: observe() appends to it and train() learns from everything in it.
  explicit ContextModel(const std::string& log_path, ContextModelOptions options = {});
  ~ContextModel();
  ContextModel(ContextModel&&) noexcept;
  ContextModel& operator=(ContextModel&&) noexcept;

  // Appends (context, model) to the log. Throws ModelError when the model has no log.
  void observe(const RequestContext& context, const std::string& model);
  // Trains from the log (throws ModelError without one, or when it holds no observations).
  TrainReport train();
  // Trains from the given observations; the models are those they name.
  TrainReport train(const std::vector<Observation>& observations);
  bool trained() const;
  // Every known model with its score, best first (ties by name). Throws ModelError before training.
  std::vector<ModelScore> rank(const RequestContext& context) const;
  std::vector<std::string> models() const;
  const ContextModelOptions& options() const;

  // The trained classifier as an .esp package (the inference graph; labels = models, the feature layout
  // in the metadata). Throws ModelError before training, FileError when the file cannot be written.
  void save(const std::string& path) const;
  // Reads a package written by save(); throws FileError, ParseError or ModelError (not a context model).
  static ContextModel load(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

using Ranker = std::function<std::vector<ModelScore>(const RequestContext&)>;

struct PreloaderOptions {
  // Models below this score are never preloaded.
  double min_score = 0.05;
  // The share of the budget preloading may fill; the rest stays for plain LRU.
  double budget_fraction = 1.0;
};

// Which models to keep resident for a context: the top-ranked ones that fit the budget, in rank order.
class Preloader {
 public:
  // Throws ModelError for a zero budget.
  Preloader(Ranker ranker, std::map<std::string, std::size_t> model_bytes, std::size_t budget_bytes,
            PreloaderOptions options = {});
  Preloader(std::shared_ptr<const ContextModel> model, std::map<std::string, std::size_t> model_bytes,
            std::size_t budget_bytes, PreloaderOptions options = {});

  // Ranked models with a known size, above min_score, taken in rank order while they fit (a model that
  // does not fit is skipped and smaller ones after it may still fit).
  std::vector<std::string> plan(const RequestContext& context) const;
  // The same for several clients at once (e.g. every request of the last minutes): the scores are
  // averaged over the contexts, the expected share of the next requests each model gets.
  std::vector<std::string> plan(const std::vector<RequestContext>& contexts) const;
  // The selection step alone, on a ranking computed elsewhere (best first).
  std::vector<std::string> choose(const std::vector<ModelScore>& ranked) const;
  std::vector<ModelScore> rank(const RequestContext& context) const;
  // Scores averaged over the contexts, best first (ties by name).
  static std::vector<ModelScore> average(const std::vector<std::vector<ModelScore>>& rankings);

  // The /api/v1/recommend endpoint: the body is a context object (parse_request_context) that may also
  // carry "top" (how many ranked models to return, default 5) and "budget_bytes" (default: the
  // preloader's). Returns {"models": [{"name", "score", "bytes"}...], "preload": [...],
  // "budget_bytes": N, "context": {...}}. Throws RequestError naming the field.
  std::string recommend(const std::string& body, std::int64_t now_unix) const;

  std::size_t budget_bytes() const { return budget_; }
  const std::map<std::string, std::size_t>& model_bytes() const { return bytes_; }

 private:
  std::vector<std::string> choose_within(const std::vector<ModelScore>& ranked, std::size_t budget) const;
  Ranker ranker_;
  std::map<std::string, std::size_t> bytes_;
  std::size_t budget_;
  PreloaderOptions options_;
};

// The serving loop's preloading rule: keeps the rankings of the requests of the last window_seconds
// (by their context's time) and, after each request, answers which models to have resident: the
// preloader's choice on the rankings averaged over the window (the expected share of the next requests,
// over the clients active now). Touch them lowest-ranked first so that the top-ranked ends most
// recently used. Thread safe; the preloader must outlive it.
class PreloadWindow {
 public:
  PreloadWindow(const Preloader& preloader, std::int64_t window_seconds);
  std::vector<std::string> after_request(const RequestContext& context);

 private:
  const Preloader& preloader_;
  std::int64_t window_seconds_;
  std::mutex mutex_;
  std::vector<std::pair<std::int64_t, std::vector<ModelScore>>> window_;  // oldest first
};

// Replays requests against a simulated cache of models under a byte budget that evicts the least
// recently used, the eviction rule of ModelPool. With a preloader, after each request the models of
// PreloadWindow(*preloader, window_seconds).after_request(that request's context) are touched (loaded
// when absent), lowest-ranked first so the top-ranked ends most recently used. A request is a hit
// when its model was resident on arrival.
struct ReplayResult {
  std::size_t requests = 0;
  std::size_t hits = 0;
  std::size_t loads_on_request = 0;  // misses: loads a request waited for
  std::size_t preloads = 0;          // loads done ahead of requests
  std::vector<bool> hit;             // per request
  double hit_rate() const { return requests == 0 ? 0.0 : static_cast<double>(hits) / requests; }
};
// Throws ModelError naming a requested model without a size or larger than the budget.
ReplayResult replay_cache(const std::vector<Observation>& requests,
                          const std::map<std::string, std::size_t>& model_bytes, std::size_t budget_bytes,
                          const Preloader* preloader = nullptr, std::int64_t window_seconds = 0);

}  // namespace espresso::serve
