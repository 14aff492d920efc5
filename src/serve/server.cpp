// The HTTP side of `espresso serve` (docs/serve.md): routes of the Open Inference Protocol, metrics and
// the store-compatible catalog over cpp-httplib, as store/server.cpp serves the registry. This is the
// only place where the library's typed errors become status codes.
#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <thread>

#include "espresso/context_model.h"
#include "espresso/image_classifier.h"
#include "espresso/import.h"
#include "espresso/model_pool.h"
#include "espresso/serve.h"
#include "espresso/store.h"
#include "store/web_page.h"
#include "serve/batcher.h"
#include "serve/errors.h"
#include "serve/metrics.h"
#include "serve/protocol.h"

namespace espresso::serve {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// A request thread keeps a body buffer up to this size for the next request (larger ones are freed):
// 16 MB x 128 threads bounds what idle threads hold.
constexpr std::size_t kKeptBodyBytes = std::size_t{16} << 20;

bool valid_model_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') return false;
  }
  return true;
}

std::string stem_name(const std::string& text) {
  std::string name = fs::path(text).stem().string();
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') c = '_';
  }
  return name;
}

bool out_of_memory(const DeviceError& e) {
  return std::string_view(e.what()).find("out of memory") != std::string_view::npos;
}

int status_of(const std::exception& e) {
  if (dynamic_cast<const RequestError*>(&e)) return 400;
  if (dynamic_cast<const BodyTooLargeError*>(&e)) return 413;
  if (dynamic_cast<const SlowClientError*>(&e)) return 408;
  if (dynamic_cast<const NotFoundError*>(&e)) return 404;
  if (dynamic_cast<const OverloadedError*>(&e)) return 429;
  if (dynamic_cast<const UnavailableError*>(&e)) return 503;
  if (dynamic_cast<const ModelLoadError*>(&e)) return 500;
  // The model refused the input (a shape its layers cannot take, a size over the limits).
  if (dynamic_cast<const ShapeError*>(&e) || dynamic_cast<const LimitError*>(&e) ||
      dynamic_cast<const DataError*>(&e))
    return 400;
  // The model cannot do what the route asks (classify an image with a model that is no image classifier).
  if (dynamic_cast<const UnsupportedError*>(&e)) return 400;
  return 500;
}

void send_error(httplib::Response& res, int status, const std::string& message, const std::string& field = "") {
  res.status = status;
  json body{{"error", message}};
  if (!field.empty()) body["field"] = field;
  res.set_content(body.dump(), "application/json");
  if (status == 429 || status == 503) res.set_header("Retry-After", "1");
}

void send_json(httplib::Response& res, const json& body) { res.set_content(body.dump(), "application/json"); }

json dims_json(const Shape& shape, bool dynamic_batch) {
  json dims = json::array();
  for (int axis = 0; axis < shape.rank(); ++axis)
    dims.push_back(axis == 0 && dynamic_batch ? -1 : shape[axis]);
  return dims;
}

// What the server knows of a model once it has run it: names and shapes (batch 1), version.
struct ModelInfo {
  std::vector<std::pair<std::string, Shape>> inputs;
  std::vector<std::pair<std::string, Shape>> outputs;
  std::string version;
  std::string source_format;
};

// The catalog view of a model (store's card), computed from its file on first use.
struct CatalogEntry {
  json card;
  std::string digest;
  std::int64_t updated = 0;
};

}  // namespace

ModelSpec ModelSpec::parse(const std::string& text) {
  ModelSpec spec;
  std::string source = text;
  const std::size_t equals = text.find('=');
  if (equals != std::string::npos) {
    spec.name = text.substr(0, equals);
    source = text.substr(equals + 1);
    if (!valid_model_name(spec.name))
      throw ServeError("--models '" + text + "': the name must be 1-128 letters, digits, '_', '-' or '.'");
  }
  if (source.empty()) throw ServeError("--models '" + text + "': names no file or reference");
  std::error_code ec;
  const std::size_t comma = source.find(',');
  if (comma != std::string::npos && !fs::exists(source, ec)) {
    spec.path = source.substr(0, comma);
    spec.weights = source.substr(comma + 1);
  } else if (!fs::exists(source, ec) && store::Reference::looks_like(source)) {
    spec.reference = source;
  } else {
    spec.path = source;
  }
  if (spec.name.empty()) {
    if (!spec.reference.empty()) {
      const store::Reference ref = store::Reference::parse(spec.reference);
      spec.name = ref.name.substr(ref.name.rfind('/') + 1);
    } else {
      spec.name = stem_name(spec.path);
    }
  }
  return spec;
}

// One served model.
struct Served {
  ModelSpec spec;
  std::mutex mutex;  // guards everything below
  bool added = false;
  std::string path;             // the file the pool loads (pulled into the cache for references)
  std::string manifest_digest;  // for references
  std::shared_ptr<const ModelInfo> info;
  std::shared_ptr<const CatalogEntry> catalog;
  std::string load_error;  // the last load's failure, until a load succeeds
  std::unique_ptr<Batcher> batcher;
};

struct Server::Impl {
  ServerOptions options;
  std::unique_ptr<ModelPool> pool;
  std::map<std::string, std::unique_ptr<Served>> models;
  Metrics metrics;
  httplib::Server http;
  int port = 0;
  std::atomic<int> in_flight{0};
  std::atomic<bool> stopping{false};
  std::atomic<bool> running{false};
  std::atomic<int> listen_fd{-1};
  std::mutex lifecycle;
  std::thread background;


  Served& served(const std::string& name) {
    auto it = models.find(name);
    if (it == models.end()) {
      if (!valid_model_name(name)) throw NotFoundError("model: '" + name + "' is not a valid model name");
      throw NotFoundError("model: no model named '" + name + "' is served");
    }
    return *it->second;
  }

  // Puts the model's file into the pool (pulling a reference first). Caller holds served.mutex.
  void ensure_added(Served& s) {
    if (s.added) return;
    try {
      if (!s.spec.reference.empty()) {
        const char* registry = std::getenv("ESPRESSO_REGISTRY");
        store::Client client(store::client_options_from_env());
        const store::PullResult pulled =
            client.pull(store::Reference::parse(s.spec.reference, registry ? registry : ""));
        s.path = pulled.package.string();
        s.manifest_digest = pulled.manifest_digest;
      } else {
        s.path = s.spec.path;
      }
      pool->add(s.spec.name, s.path, s.spec.weights);
      s.added = true;
    } catch (const Error& e) {
      s.load_error = e.what();
      throw ModelLoadError("model '" + s.spec.name + "' cannot be loaded: " + e.what());
    }
  }

  // Runs `work` and, when the device runs out of memory, evicts every idle model and tries once more.
  template <typename Work>
  auto with_memory_retry(const std::string& name, Work work) {
    try {
      return work();
    } catch (const DeviceError& e) {
      if (!out_of_memory(e)) throw;
      pool->evict_idle();
    }
    try {
      return work();
    } catch (const DeviceError& e) {
      if (!out_of_memory(e)) throw;
      throw UnavailableError("model '" + name +
                             "': the device is out of memory even after evicting idle models: " + e.what());
    }
  }

  ModelRequest acquire(Served& s, std::int64_t batch = 0) {
    {
      std::lock_guard lock(s.mutex);
      ensure_added(s);
    }
    try {
      ModelRequest request = pool->acquire(s.spec.name, batch);
      std::lock_guard lock(s.mutex);
      s.load_error.clear();
      return request;
    } catch (const DeviceError&) {
      throw;
    } catch (const Error& e) {
      std::lock_guard lock(s.mutex);
      s.load_error = e.what();
      throw ModelLoadError("model '" + s.spec.name + "' cannot be loaded: " + e.what());
    }
  }

  TensorMap run(Served& s, const TensorMap& inputs) {
    return with_memory_retry(s.spec.name, [&] {
      const Tensor& first = inputs.begin()->second;
      ModelRequest request = acquire(s, first.shape().rank() > 0 ? first.shape()[0] : 0);
      return request.forward(inputs);
    });
  }

  // Input and output names and shapes: the graph's inputs, and one run at batch 1 for the outputs.
  std::shared_ptr<const ModelInfo> info(Served& s) {
    {
      std::lock_guard lock(s.mutex);
      if (s.info) return s.info;
    }
    auto made = std::make_shared<ModelInfo>();
    with_memory_retry(s.spec.name, [&] {
      ModelRequest request = acquire(s);
      const Graph& graph = request.session().model().graph();
      made->version = graph.metadata.version.empty() ? "1" : graph.metadata.version;
      made->source_format = graph.metadata.source_format;
      made->inputs.clear();
      made->outputs.clear();
      TensorMap zeros;
      for (const InputSpec& input : graph.inputs) {
        std::vector<std::int64_t> dims = input.shape.dims();
        if (!dims.empty()) dims[0] = 1;
        made->inputs.emplace_back(input.name, Shape(dims));
        zeros.emplace(input.name, Tensor::zeros(Shape(dims)));
      }
      const TensorMap outputs = request.forward(zeros);
      for (const std::string& name : graph.outputs) {
        auto it = outputs.find(name);
        if (it != outputs.end()) made->outputs.emplace_back(name, it->second.shape());
      }
      return 0;
    });
    std::lock_guard lock(s.mutex);
    if (!s.info) s.info = made;
    return s.info;
  }

  std::shared_ptr<const CatalogEntry> catalog(Served& s) {
    std::string path;
    std::string digest;
    {
      std::lock_guard lock(s.mutex);
      if (s.catalog) return s.catalog;
      ensure_added(s);
      path = s.path;
      digest = s.manifest_digest;
    }
    // Read and planned outside the lock, so inference on the model goes on meanwhile.
    auto entry = std::make_shared<CatalogEntry>();
    try {
      Graph graph = load_model(path, s.spec.weights);
      const std::uint64_t bytes =
          fs::file_size(path) + (s.spec.weights.empty() ? 0 : fs::file_size(s.spec.weights));
      entry->card = json::parse(store::model_card(std::move(graph), bytes));
      entry->digest = digest.empty() ? store::sha256_file_digest(path) : digest;
      struct stat info {};
      if (::stat(path.c_str(), &info) == 0) entry->updated = static_cast<std::int64_t>(info.st_mtime);
    } catch (const Error& e) {
      throw ModelLoadError("model '" + s.spec.name + "' cannot be read: " + e.what());
    } catch (const fs::filesystem_error& e) {
      throw ModelLoadError("model '" + s.spec.name + "' cannot be read: " + e.what());
    }
    if (entry->card.value("name", "").empty()) entry->card["name"] = s.spec.name;
    std::lock_guard lock(s.mutex);
    if (!s.catalog) s.catalog = entry;
    return s.catalog;
  }

  void check_version(Served& s, const std::string& version) {
    if (version.empty()) return;
    const std::string served_version = info(s)->version;
    if (version != served_version)
      throw NotFoundError("version: model '" + s.spec.name + "' has no version '" + version +
                          "' (it serves '" + served_version + "')");
  }

  // Admission of one inference request: 503 while stopping, 429 past the concurrency limit.
  struct Admission {
    Impl& s;
    explicit Admission(Impl& server) : s(server) {
      if (s.stopping) throw UnavailableError("the server is shutting down");
      if (s.in_flight.fetch_add(1) >= s.options.max_concurrency) {
        s.in_flight.fetch_sub(1);
        throw OverloadedError("the server has " + std::to_string(s.options.max_concurrency) +
                              " requests in flight (--max-concurrency); retry later");
      }
    }
    ~Admission() { s.in_flight.fetch_sub(1); }
    Admission(const Admission&) = delete;
    Admission& operator=(const Admission&) = delete;
  };

  std::string read_body(const httplib::Request& req, const httplib::ContentReader& reader) {
    std::string body;
    read_body(req, reader, body);
    return body;
  }

  // Reads the body into `body` (emptied first; its capacity is used and grown to Content-Length).
  void read_body(const httplib::Request& req, const httplib::ContentReader& reader, std::string& body) {
    body.clear();
    const std::size_t limit = options.max_body_bytes;
    std::uint64_t declared = 0;
    const bool has_length = req.has_header("Content-Length");
    if (has_length) {
      const std::string text = req.get_header_value("Content-Length");
      try {
        declared = std::stoull(text);
      } catch (const std::exception&) {
        throw RequestError("Content-Length: '" + text + "' is not a number");
      }
      if (declared > limit)
        throw BodyTooLargeError("body: " + std::to_string(declared) + " bytes exceeds the limit of " +
                                std::to_string(limit) + " (--max-body-bytes)");
    }
    // The declared length is known and within the limit: one allocation instead of doubling (and
    // copying) the string chunk by chunk as the body arrives.
    if (has_length) body.reserve(static_cast<std::size_t>(declared));
    bool too_large = false;
    const bool complete = reader([&](const char* data, std::size_t length) {
      if (body.size() + length > limit) {
        too_large = true;
        return false;
      }
      body.append(data, length);
      return true;
    });
    if (too_large)
      throw BodyTooLargeError("body: exceeds the limit of " + std::to_string(limit) +
                              " bytes (--max-body-bytes)");
    if (!complete || (has_length && body.size() != declared))
      throw SlowClientError("body: the client stopped sending or was slower than the read timeout of " +
                            std::to_string(options.read_timeout.count()) + " s");
  }

  // Checks the request's tensors against the model and puts them in the batcher's form: each is
  // decoded straight into its rows of the batch (from the body for binary data), by the request's thread.
  PendingInputs model_inputs(const ModelInfo& info, const InferRequest& request) {
    PendingInputs inputs;
    std::int64_t batch = -1;
    for (std::size_t i = 0; i < request.inputs.size(); ++i) {
      const RequestedInput& input = request.inputs[i];
      const std::string field = "inputs[" + std::to_string(i) + "]";
      auto expected = std::find_if(info.inputs.begin(), info.inputs.end(),
                                   [&](const auto& p) { return p.first == input.name; });
      if (expected == info.inputs.end()) {
        std::string names;
        for (const auto& [name, shape] : info.inputs) names += (names.empty() ? "" : ", ") + name;
        throw RequestError(field + ".name: the model has no input '" + input.name + "' (it has: " + names +
                           ")");
      }
      const Shape& want = expected->second;
      const Shape& got = input.shape;
      bool fits = got.rank() == want.rank() && got.rank() > 0 && got[0] >= 1;
      for (int axis = 1; fits && axis < got.rank(); ++axis) fits = got[axis] == want[axis];
      if (!fits)
        throw RequestError(field + ".shape: " + dims_json(got, false).dump() +
                           " does not fit the model's input " + dims_json(want, true).dump() +
                           " (a batch of at least 1 in dimension 0)");
      if (batch >= 0 && got[0] != batch)
        throw RequestError(field + ".shape: batch " + std::to_string(got[0]) +
                           " differs from the other inputs' " + std::to_string(batch));
      batch = got[0];
      inputs.emplace(input.name, PendingInput{input.shape, DType::f32, [&input](void* destination) {
                                                decode_input(input, static_cast<float*>(destination));
                                              }});
    }
    for (const auto& [name, shape] : info.inputs) {
      if (!inputs.count(name)) throw RequestError("inputs: the model's input '" + name + "' is missing");
    }
    for (std::size_t i = 0; i < request.outputs.size(); ++i) {
      const std::string& name = request.outputs[i].name;
      if (std::none_of(info.outputs.begin(), info.outputs.end(),
                       [&](const auto& p) { return p.first == name; }))
        throw RequestError("outputs[" + std::to_string(i) + "].name: the model has no output '" + name + "'");
    }
    return inputs;
  }

  void infer(const std::string& name, const std::string& version, const httplib::Request& req,
             httplib::Response& res, const httplib::ContentReader& reader) {
    Served& s = served(name);
    Admission admission(*this);
    const std::optional<RequestContext> context = request_context(req);
    // The request thread's body buffer, kept from request to request: no fresh pages to fault in for
    // every large body. The binary tensors are decoded from it straight into their rows of the batch.
    thread_local std::string body;
    struct Trim {
      ~Trim() {
        if (body.capacity() > kKeptBodyBytes) std::string().swap(body);
      }
    } trim;
    read_body(req, reader, body);
    std::optional<std::size_t> header_length;
    if (req.has_header("Inference-Header-Content-Length")) {
      const std::string text = req.get_header_value("Inference-Header-Content-Length");
      try {
        std::size_t used = 0;
        header_length = std::stoull(text, &used);
        if (used != text.size()) throw std::invalid_argument(text);
      } catch (const std::exception&) {
        throw RequestError("Inference-Header-Content-Length: '" + text + "' is not a number");
      }
    }
    const InferRequest request = parse_infer_request(body, header_length, /*defer_binary=*/true);
    const std::shared_ptr<const ModelInfo> model = info(s);
    check_version(s, version);
    std::future<TensorMap> pending = s.batcher->submit(model_inputs(*model, request));
    TensorMap outputs = pending.get();
    std::vector<std::pair<std::string, Tensor>> selected;
    if (request.outputs.empty()) {
      for (const auto& [output, shape] : model->outputs) selected.emplace_back(output, outputs.at(output));
    } else {
      for (const RequestedOutput& wanted : request.outputs)
        selected.emplace_back(wanted.name, outputs.at(wanted.name));
    }
    const InferResponse response = encode_infer_response(name, model->version, request, selected);
    if (response.header_length) {
      res.set_header("Inference-Header-Content-Length", std::to_string(*response.header_length));
      res.set_content(response.body, "application/octet-stream");
    } else {
      res.set_content(response.body, "application/json");
    }
    observed(context, name);
  }

  // An image body in, the top-K classes out (espresso/image_classifier.h does the preprocessing the
  // model's package asks for). ?top=K, default options.top_k.
  void classify(const std::string& name, const httplib::Request& req, httplib::Response& res,
                const httplib::ContentReader& reader) {
    Served& s = served(name);
    Admission admission(*this);
    const std::optional<RequestContext> context = request_context(req);
    // The page names the release it shows; one this server does not serve is a 404, as on /v2.
    if (req.has_param("version")) check_version(s, req.get_param_value("version"));
    ImageClassifierOptions classifier;
    classifier.top = options.top_k;
    classifier.what = "body";
    if (req.has_param("top")) {
      const std::string text = req.get_param_value("top");
      std::size_t used = 0;
      int top = 0;
      try {
        top = std::stoi(text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != text.size() || top < 1 || top > 1000)
        throw RequestError("top: must be a number from 1 to 1000");
      classifier.top = top;
    }
    const std::string body = read_body(req, reader);
    if (body.empty()) throw RequestError("body: empty; send the image's bytes (JPEG, PNG, ...)");
    const std::span<const std::uint8_t> image(reinterpret_cast<const std::uint8_t*>(body.data()),
                                              body.size());
    const ImageClassification result = with_memory_retry(name, [&] {
      ModelRequest request = acquire(s);
      check_image_classifier(request.session().model());
      return classify_image(request.session(), image, classifier);
    });
    json answer = web::classification_json(result);
    answer["model"] = name;
    send_json(res, answer);
    observed(context, name);
  }

  json model_metadata(Served& s, const std::string& version) {
    const std::shared_ptr<const ModelInfo> model = info(s);
    check_version(s, version);
    json inputs = json::array();
    for (const auto& [name, shape] : model->inputs)
      inputs.push_back({{"name", name}, {"datatype", "FP32"}, {"shape", dims_json(shape, true)}});
    json outputs = json::array();
    for (const auto& [name, shape] : model->outputs)
      outputs.push_back({{"name", name}, {"datatype", "FP32"}, {"shape", dims_json(shape, true)}});
    return {{"name", s.spec.name},
            {"versions", json::array({model->version})},
            {"platform", "espresso" + (model->source_format.empty() ? "" : "_" + model->source_format)},
            {"inputs", inputs},
            {"outputs", outputs}};
  }

  json catalog_summary(Served& s) {
    const std::shared_ptr<const CatalogEntry> entry = catalog(s);
    json summary = {
        {"name", s.spec.name}, {"version", entry->card.value("version", "")}, {"digest", entry->digest}};
    for (const char* key :
         {"description", "task", "license", "author", "size_bytes", "params", "flops", "metrics"}) {
      if (entry->card.contains(key)) summary[key] = entry->card[key];
    }
    return summary;
  }

  void api_models(const httplib::Request& req, httplib::Response& res) {
    const std::string text = req.get_param_value("q");
    const std::string task = req.get_param_value("task");
    const std::string license = req.get_param_value("license");
    const std::string sort = req.get_param_value("sort");
    if (text.size() > 512) throw RequestError("q", "longer than 512 characters");
    // The page's other filters (docs/web.md), as the store's search reads them.
    std::optional<std::uint64_t> max_bytes;
    std::optional<double> min_accuracy;
    try {
      std::size_t used = 0;
      if (req.has_param("max_bytes")) {
        const std::string value = req.get_param_value("max_bytes");
        max_bytes = std::stoull(value, &used);
        if (used != value.size() || value.front() == '-') throw std::invalid_argument(value);
      }
    } catch (const std::exception&) {
      throw RequestError("max_bytes", "must be a number of bytes");
    }
    try {
      std::size_t used = 0;
      if (req.has_param("min_accuracy")) {
        const std::string value = req.get_param_value("min_accuracy");
        min_accuracy = std::stod(value, &used);
        if (used != value.size()) throw std::invalid_argument(value);
      }
    } catch (const std::exception&) {
      throw RequestError("min_accuracy", "must be a number");
    }
    if (!sort.empty() && sort != "relevance" && sort != "name" && sort != "updated" && sort != "size")
      throw RequestError("sort", "must be relevance, name, updated or size");
    json list = json::array();
    for (auto& [name, s] : models) {
      json summary;
      try {
        summary = catalog_summary(*s);
      } catch (const ModelLoadError&) {
        continue;  // a model whose file cannot be read has no card; /v2 reports its error
      }
      if (!task.empty() && summary.value("task", "") != task) continue;
      if (!license.empty() && summary.value("license", "") != license) continue;
      if (max_bytes && *max_bytes > 0 && summary.value("size_bytes", std::uint64_t{0}) > *max_bytes) continue;
      if (min_accuracy && *min_accuracy > 0) {
        // Accuracy metrics: keys containing "acc" or "top1", as the store's search and the page read them.
        double best = -1.0;
        if (summary.contains("metrics") && summary["metrics"].is_object()) {
          for (const auto& [key, value] : summary["metrics"].items()) {
            std::string lower = key;
            std::transform(lower.begin(), lower.end(), lower.begin(),
                           [](unsigned char c) { return std::tolower(c); });
            if (value.is_number() && (lower.find("acc") != std::string::npos || lower.find("top1") != std::string::npos))
              best = std::max(best, value.get<double>());
          }
        }
        if (best < *min_accuracy) continue;
      }
      if (!text.empty()) {
        std::string haystack = name + " " + summary.value("description", "") + " " +
                               summary.value("task", "") + " " + summary.value("author", "");
        std::string needle = text;
        for (std::string* t : {&haystack, &needle})
          std::transform(t->begin(), t->end(), t->begin(), [](unsigned char c) { return std::tolower(c); });
        if (haystack.find(needle) == std::string::npos) continue;
      }
      list.push_back(std::move(summary));
    }
    if (sort == "size")
      std::stable_sort(list.begin(), list.end(), [](const json& a, const json& b) {
        return a.value("size_bytes", std::uint64_t{0}) < b.value("size_bytes", std::uint64_t{0});
      });
    send_json(res, {{"models", list}, {"next_cursor", nullptr}});
  }

  void api_model(const std::string& name, httplib::Response& res) {
    Served& s = served(name);
    const std::shared_ptr<const CatalogEntry> entry = catalog(s);
    const std::string version = entry->card.value("version", "");
    send_json(
        res,
        {{"name", name},
         {"latest", version},
         {"digest", entry->digest},
         {"card", entry->card},
         {"versions",
          json::array({{{"version", version}, {"digest", entry->digest}, {"updated", entry->updated}}})}});
  }

  // Runs a handler, turning its typed errors into JSON errors, and counts it.
  template <typename Handler>
  void guarded(const std::string& model, httplib::Response& res, Handler handler) {
    const auto start = std::chrono::steady_clock::now();
    try {
      handler();
      if (res.status == -1) res.status = 200;
    } catch (const std::exception& e) {
      const auto* request_error = dynamic_cast<const RequestError*>(&e);
      send_error(res, status_of(e), e.what(), request_error ? request_error->field() : "");
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics.request(model, res.status, seconds);
  }

  // The context model (docs/context_model.md): the log, the ranking with its preloader, and the
  // background thread that preloads and retrains.
  struct Ranking {
    std::shared_ptr<const ContextModel> model;
    std::unique_ptr<Preloader> preloader;
    std::unique_ptr<PreloadWindow> window;
  };
  std::unique_ptr<RequestLog> request_log;
  std::map<std::string, std::size_t> model_bytes;  // file sizes: what a served model adds when resident
  std::mutex ranking_mutex;
  std::shared_ptr<Ranking> ranking;  // null until a context model is loaded or trained
  std::mutex context_mutex;          // guards pending, retrain_due, context_stop
  std::condition_variable context_wake;
  std::deque<RequestContext> pending;
  bool retrain_due = false;
  bool context_stop = false;
  std::thread context_thread;
  std::atomic<std::int64_t> logged{0};
  std::atomic<std::int64_t> preloads{0};
  std::atomic<std::int64_t> retrainings{0};
  std::atomic<std::int64_t> preload_failures{0};

  std::shared_ptr<Ranking> make_ranking(std::shared_ptr<const ContextModel> model) {
    auto made = std::make_shared<Ranking>();
    made->model = std::move(model);
    made->preloader = std::make_unique<Preloader>(made->model, model_bytes, options.memory_budget_bytes);
    made->window = std::make_unique<PreloadWindow>(*made->preloader, options.preload_window_seconds);
    return made;
  }

  std::shared_ptr<Ranking> current_ranking() {
    std::lock_guard lock(ranking_mutex);
    return ranking;
  }

  // The request's context from its X-Espresso-Context header; nullopt without one. Throws
  // RequestError naming the header and the field.
  static std::optional<RequestContext> request_context(const httplib::Request& req) {
    if (!req.has_header("X-Espresso-Context")) return std::nullopt;
    const std::int64_t now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    try {
      return parse_request_context(req.get_header_value("X-Espresso-Context"), now);
    } catch (const RequestError& e) {
      const std::string field = "X-Espresso-Context" + (e.field().empty() ? "" : "." + e.field());
      std::string message = e.what();
      const std::string prefix = "field '" + e.field() + "': ";
      if (!e.field().empty() && message.rfind(prefix, 0) == 0) message = message.substr(prefix.size());
      throw RequestError(field, message);
    }
  }

  // After a successful request with a context: log it, hand it to the preloader, count for retraining.
  void observed(const std::optional<RequestContext>& context, const std::string& model) {
    if (!context) return;
    if (request_log) {
      request_log->append(Observation{*context, model});
      const std::int64_t count = ++logged;
      if (options.retrain_every > 0 && count % options.retrain_every == 0) {
        std::lock_guard lock(context_mutex);
        retrain_due = true;
        context_wake.notify_one();
      }
    }
    if (current_ranking()) {
      std::lock_guard lock(context_mutex);
      pending.push_back(*context);
      while (pending.size() > 256) pending.pop_front();
      context_wake.notify_one();
    }
  }

  void preload_model(const std::string& name) {
    auto it = models.find(name);
    if (it == models.end()) throw ServeError("preload: no model named '" + name + "' is served");
    with_memory_retry(name, [&] {
      acquire(*it->second).release();
      return 0;
    });
  }

  // The background thread: retrains when due, and after each request with a context touches the
  // preloader's plan lowest-ranked first, so the top-ranked ends most recently used (LRU evicts the rest).
  void context_loop() {
    for (;;) {
      std::vector<RequestContext> contexts;
      bool retrain = false;
      {
        std::unique_lock lock(context_mutex);
        context_wake.wait(lock, [&] { return context_stop || retrain_due || !pending.empty(); });
        if (context_stop) return;
        contexts.assign(pending.begin(), pending.end());
        pending.clear();
        retrain = retrain_due;
        retrain_due = false;
      }
      if (retrain) {
        try {
          auto model = std::make_shared<ContextModel>();
          model->train(read_request_log(options.context_log));
          auto made = make_ranking(std::move(model));
          std::lock_guard lock(ranking_mutex);
          ranking = std::move(made);
          ++retrainings;
        } catch (const Error& e) {
          std::fprintf(stderr, "serve: retraining the context model from %s failed: %s\n",
                       options.context_log.c_str(), e.what());
        }
      }
      const std::shared_ptr<Ranking> current = current_ranking();
      if (!current || contexts.empty()) continue;
      std::vector<std::string> plan;
      for (const RequestContext& context : contexts) plan = current->window->after_request(context);
      for (auto name = plan.rbegin(); name != plan.rend(); ++name) {
        {
          std::lock_guard lock(context_mutex);
          if (context_stop) return;
        }
        auto it = models.find(*name);
        if (it == models.end()) continue;
        bool was_resident = false;
        {
          std::lock_guard lock(it->second->mutex);
          was_resident = it->second->added && pool->resident(*name);
        }
        try {
          preload_model(*name);
          if (!was_resident) ++preloads;
        } catch (const std::exception&) {
          ++preload_failures;  // a request for it reports the error
        }
      }
    }
  }

  void stop_context_thread() {
    {
      std::lock_guard lock(context_mutex);
      context_stop = true;
    }
    context_wake.notify_all();
    if (context_thread.joinable() && context_thread.get_id() != std::this_thread::get_id()) context_thread.join();
  }

  // POST /api/v1/recommend: a context in, the ranked models and the preload plan out.
  void recommend(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    const std::string body = read_body(req, reader);
    const std::shared_ptr<Ranking> current = current_ranking();
    if (!current)
      throw UnavailableError(
          "recommend: no context model is loaded (start with --context-model FILE.esp, or --context-log "
          "FILE with --retrain-every N)");
    const std::int64_t now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    res.set_content(current->preloader->recommend(body, now), "application/json");
  }

  void handle_get(const httplib::Request& req, httplib::Response& res);
  void handle_post(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader);
};

namespace {

// /v2/models/NAME[/versions/V][/ACTION]
struct ModelRoute {
  bool matched = false;
  std::string name;
  std::string version;
  std::string action;  // "", "ready", "infer"
};

ModelRoute parse_model_route(const std::string& path) {
  ModelRoute route;
  const std::string prefix = "/v2/models/";
  if (path.rfind(prefix, 0) != 0) return route;
  std::vector<std::string> parts;
  std::size_t start = prefix.size();
  for (;;) {
    const std::size_t slash = path.find('/', start);
    parts.push_back(path.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  std::size_t i = 0;
  route.name = parts[i++];
  if (i < parts.size() && parts[i] == "versions") {
    if (i + 1 >= parts.size() || parts[i + 1].empty()) return route;
    route.version = parts[i + 1];
    i += 2;
  }
  if (i < parts.size()) route.action = parts[i++];
  if (i != parts.size() || route.name.empty()) return route;
  if (!route.action.empty() && route.action != "ready" && route.action != "infer") return route;
  route.matched = true;
  return route;
}

}  // namespace

void Server::Impl::handle_get(const httplib::Request& req, httplib::Response& res) {
  const std::string& path = req.path;
  if (path == "/v2/health/live") return guarded("", res, [&] { send_json(res, {{"live", true}}); });
  if (path == "/v2/health/ready") {
    return guarded("", res, [&] {
      if (stopping) throw RequestError("the server is shutting down");
      send_json(res, {{"ready", true}});
    });
  }
  if (path == "/v2" || path == "/v2/") {
    return guarded("", res, [&] {
      send_json(res, {{"name", "espresso"},
                      {"version", ESPRESSO_VERSION},
                      {"extensions", json::array({"binary_tensor_data"})}});
    });
  }
  if (path == "/metrics") {
    return guarded("", res, [&] {
      std::string text = metrics.text(pool->stats(), in_flight.load());
      text += "# HELP espresso_context_logged_total Requests with a context written to the request log.\n"
              "# TYPE espresso_context_logged_total counter\nespresso_context_logged_total " +
              std::to_string(logged.load()) +
              "\n# HELP espresso_context_preloads_total Models the context preloader loaded ahead of a request.\n"
              "# TYPE espresso_context_preloads_total counter\nespresso_context_preloads_total " +
              std::to_string(preloads.load()) +
              "\n# HELP espresso_context_retrainings_total Context models trained from the log while serving.\n"
              "# TYPE espresso_context_retrainings_total counter\nespresso_context_retrainings_total " +
              std::to_string(retrainings.load()) + "\n";
      res.set_content(text, "text/plain; version=0.0.4");
    });
  }
  if (path == "/api/v1/models") return guarded("", res, [&] { api_models(req, res); });
  if (path.rfind("/api/v1/models/", 0) == 0) {
    const std::string name = path.substr(15);
    return guarded(models.count(name) ? name : "", res, [&] { api_model(name, res); });
  }
  const ModelRoute route = parse_model_route(path);
  if (route.matched && route.action != "infer") {
    const std::string label = models.count(route.name) ? route.name : "";
    return guarded(label, res, [&] {
      Served& s = served(route.name);
      if (route.action.empty()) return send_json(res, model_metadata(s, route.version));
      if (stopping)
        throw RequestError("model '" + route.name + "' is not ready: the server is shutting down");
      {
        std::lock_guard lock(s.mutex);
        if (!s.load_error.empty())
          throw RequestError("model '" + route.name +
                             "' is not ready: its last load failed: " + s.load_error);
      }
      if (!route.version.empty()) check_version(s, route.version);
      send_json(res,
                {{"name", route.name}, {"ready", true}, {"resident", s.added && pool->resident(route.name)}});
    });
  }
  if (!route.matched && web::send_asset(req, res)) return;
  guarded("", res, [&] {
    if (route.matched) throw RequestError("GET " + path + ": inference takes POST");
    throw NotFoundError("path: no endpoint " + path);
  });
}

void Server::Impl::handle_post(const httplib::Request& req, httplib::Response& res,
                               const httplib::ContentReader& reader) {
  const ModelRoute route = parse_model_route(req.path);
  // POST /v1/classify/NAME, or its alias POST /api/v1/models/NAME/classify.
  std::string image_model;
  const std::string& path = req.path;
  const std::string api_prefix = "/api/v1/models/";
  const std::string api_suffix = "/classify";
  if (path.rfind("/v1/classify/", 0) == 0) {
    image_model = path.substr(13);
  } else if (path.rfind(api_prefix, 0) == 0 && path.size() > api_prefix.size() + api_suffix.size() &&
             path.compare(path.size() - api_suffix.size(), api_suffix.size(), api_suffix) == 0) {
    image_model = path.substr(api_prefix.size(), path.size() - api_prefix.size() - api_suffix.size());
  }
  if (!image_model.empty()) {
    const std::string label = models.count(image_model) ? image_model : "";
    guarded(label, res, [&] { classify(image_model, req, res, reader); });
  } else if (path == "/api/v1/recommend") {
    guarded("", res, [&] { recommend(req, res, reader); });
  } else if (route.matched && route.action == "infer") {
    const std::string label = models.count(route.name) ? route.name : "";
    guarded(label, res, [&] { infer(route.name, route.version, req, res, reader); });
  } else {
    guarded("", res, [&] { throw NotFoundError("path: no POST endpoint " + req.path); });
  }
  // A refused request whose body was not read: close, so the unread bytes never pass for a request.
  if (res.status >= 400) res.set_header("Connection", "close");
}

Server::Server(ServerOptions options, std::vector<ModelSpec> models) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.options = std::move(options);
  if (s.options.max_batch < 1) throw ServeError("--max-batch must be at least 1");
  if (s.options.max_concurrency < 1) throw ServeError("--max-concurrency must be at least 1");
  if (s.options.max_queue_delay.count() < 0) throw ServeError("--max-queue-delay-us must not be negative");
  if (s.options.memory_budget_bytes == 0) throw ServeError("--memory-budget must be more than 0 bytes");
  if (s.options.http_threads < 1) throw ServeError("--http-threads must be at least 1");
  if (models.empty()) throw ServeError("serve: no models (--models NAME=PATH|REF)");
  ModelPoolOptions pool;
  pool.device = s.options.device;
  pool.budget_bytes = s.options.memory_budget_bytes;
  pool.session.threads = s.options.session_threads;
  // Idle contexts for every padded batch size (1, 2, 4, ... max_batch) times the workers (that many may
  // run one size at once), so none is dropped at release and replanned later: only the sizes that occur
  // are ever created.
  int sizes = 1;
  while ((1 << (sizes - 1)) < s.options.max_batch) ++sizes;
  pool.max_idle_contexts = std::max(4, (sizes + 1) * std::max(1, s.options.workers_per_model));
  const bool pad = s.options.pad_batches == ServerOptions::PadBatches::always ||
                   (s.options.pad_batches == ServerOptions::PadBatches::on_gpu && !s.options.device.is_cpu());
  s.pool = std::make_unique<ModelPool>(pool);
  for (ModelSpec& spec : models) {
    if (!valid_model_name(spec.name)) throw ServeError("model name '" + spec.name + "' is not valid");
    if (s.models.count(spec.name)) throw ServeError("model name '" + spec.name + "' is given twice");
    std::error_code ec;
    if (spec.reference.empty() && !fs::is_regular_file(spec.path, ec))
      throw ServeError("model '" + spec.name + "': " + spec.path + " is not a readable file");
    if (!spec.weights.empty() && !fs::is_regular_file(spec.weights, ec))
      throw ServeError("model '" + spec.name + "': weights " + spec.weights + " is not a readable file");
    auto served = std::make_unique<Served>();
    served->spec = spec;
    Served* raw = served.get();
    const std::string name = spec.name;
    BatcherOptions batching{s.options.max_batch, s.options.max_queue_delay, s.options.workers_per_model, pad,
                            s.options.device};
    served->batcher = std::make_unique<Batcher>(
        batching, [&s, raw](const TensorMap& inputs) { return s.run(*raw, inputs); },
        [&s, name](std::int64_t samples) { s.metrics.batch(name, samples); });
    s.models.emplace(name, std::move(served));
  }
  if (s.options.retrain_every < 0) throw ServeError("--retrain-every must not be negative");
  if (s.options.retrain_every > 0 && s.options.context_log.empty())
    throw ServeError("--retrain-every needs --context-log FILE (the model is retrained from the log)");
  if (s.options.preload_window_seconds < 1) throw ServeError("--preload-window must be at least 1 second");
  for (const auto& [name, served] : s.models) {
    if (!served->spec.reference.empty()) continue;  // its size is known once pulled
    std::error_code ec;
    std::uintmax_t bytes = fs::file_size(served->spec.path, ec);
    if (!served->spec.weights.empty()) bytes += fs::file_size(served->spec.weights, ec);
    if (!ec) s.model_bytes[name] = static_cast<std::size_t>(bytes);
  }
  if (!s.options.context_log.empty()) s.request_log = std::make_unique<RequestLog>(s.options.context_log);
  if (!s.options.context_model.empty())
    s.ranking = s.make_ranking(std::make_shared<const ContextModel>(ContextModel::load(s.options.context_model)));
  if (s.ranking || s.options.retrain_every > 0) s.context_thread = std::thread([&s] { s.context_loop(); });
  s.http.new_task_queue = [threads = s.options.http_threads] {
    return new httplib::ThreadPool(static_cast<std::size_t>(threads));
  };
  s.http.set_read_timeout(static_cast<time_t>(s.options.read_timeout.count()), 0);
  s.http.set_write_timeout(static_cast<time_t>(s.options.write_timeout.count()), 0);
  s.http.set_keep_alive_max_count(100000);
  s.http.set_keep_alive_timeout(2);
  s.http.set_tcp_nodelay(true);
  // httplib listens with a backlog of 5: 64 clients connecting at once overflow it and the kernel drops
  // their handshakes, which come back seconds later. The socket is kept so bind() can widen it.
  s.http.set_socket_options([&s](socket_t sock) {
    httplib::default_socket_options(sock);
    s.listen_fd = sock;
  });
  s.http.set_payload_max_length(s.options.max_body_bytes + 1);
  s.http.Get(R"(/.*)", [&s](const httplib::Request& req, httplib::Response& res) { s.handle_get(req, res); });
  s.http.Post(R"(/.*)", [&s](const httplib::Request& req, httplib::Response& res,
                             const httplib::ContentReader& reader) { s.handle_post(req, res, reader); });
  s.http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    std::string message = "internal error";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
    }
    send_error(res, 500, message);
  });
}

Server::~Server() {
  stop();
  impl_->stop_context_thread();
  // Queued requests are answered before the batchers' threads end.
  for (auto& [name, served] : impl_->models) served->batcher->shutdown();
}

int Server::bind() {
  Impl& s = *impl_;
  if (s.options.port == 0) {
    s.port = s.http.bind_to_any_port(s.options.host);
  } else {
    s.port = s.http.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1;
  }
  if (s.port <= 0)
    throw ServeError("serve: cannot listen on " + s.options.host + ":" + std::to_string(s.options.port));
  if (s.listen_fd >= 0) ::listen(s.listen_fd, SOMAXCONN);
  return s.port;
}

void Server::run() {
  Impl& s = *impl_;
  s.running = true;
  // Returns after stop(), once the request threads have finished the requests they hold.
  if (!s.stopping) s.http.listen_after_bind();
  s.running = false;
}

int Server::start() {
  Impl& s = *impl_;
  const int bound = bind();
  std::lock_guard lock(s.lifecycle);
  s.running = true;
  s.background = std::thread([this] { run(); });
  return bound;
}

void Server::stop() {
  Impl& s = *impl_;
  s.stopping = true;
  // httplib's stop() does nothing before its listen loop is up: wait for it when run() has begun.
  while (s.running && !s.http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  s.http.stop();
  std::lock_guard lock(s.lifecycle);
  if (s.background.joinable() && s.background.get_id() != std::this_thread::get_id()) s.background.join();
}

int Server::port() const { return impl_->port; }

std::vector<std::string> Server::models() const {
  std::vector<std::string> names;
  for (const auto& [name, served] : impl_->models) names.push_back(name);
  return names;
}

std::vector<std::string> Server::resident_models() const {
  std::vector<std::string> names;
  for (const auto& [name, served] : impl_->models) {
    bool added = false;
    {
      std::lock_guard lock(served->mutex);
      added = served->added;
    }
    if (added && impl_->pool->resident(name)) names.push_back(name);
  }
  return names;
}

void Server::preload(const std::string& name) {
  impl_->preload_model(name);
}

Server::ContextStats Server::context_stats() const {
  return {impl_->logged.load(), impl_->preloads.load(), impl_->retrainings.load()};
}

}  // namespace espresso::serve
