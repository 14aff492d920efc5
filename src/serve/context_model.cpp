#include "serve/context_model.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include "espresso/graph.h"
#include "espresso/net.h"
#include "espresso/package.h"
#include "espresso/solver.h"
#include "espresso/tensor.h"

namespace espresso::serve {

using nlohmann::json;

RequestError::RequestError(std::string field, const std::string& message)
    : ParseError(field.empty() ? message : "field '" + field + "': " + message), field_(std::move(field)) {}

RequestError::RequestError(const std::string& message) : ParseError(message) {}

// ---- Calendar ---------------------------------------------------------------------------------

namespace {

constexpr std::int64_t kSecondsPerDay = 86400;
constexpr std::size_t kMaxTextLength = 256;
constexpr std::size_t kMaxRecentItems = 256;

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

struct Civil {
  std::int64_t year;
  unsigned month, day;
};

// The inverse of days_from_civil (Howard Hinnant's algorithm, written from its description).
Civil civil_from_days(std::int64_t days) {
  days += 719468;
  const std::int64_t era = floor_div(days, 146097);
  const auto doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned day = doy - (153 * mp + 2) / 5 + 1;
  const unsigned month = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(yoe) + era * 400 + (month <= 2 ? 1 : 0), month, day};
}

bool leap_year(std::int64_t year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

unsigned days_in_month(std::int64_t year, unsigned month) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && leap_year(year) ? 29 : kDays[month - 1];
}

}  // namespace

std::int64_t days_from_civil(std::int64_t year, unsigned month, unsigned day) {
  year -= month <= 2 ? 1 : 0;
  const std::int64_t era = floor_div(year, 400);
  const auto yoe = static_cast<unsigned>(year - era * 400);
  const unsigned doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

double RequestContext::hour_of_day() const {
  const std::int64_t seconds = local_seconds - day() * kSecondsPerDay;
  return static_cast<double>(seconds) / 3600.0;
}

int RequestContext::weekday() const {
  // 1970-01-01 was a Thursday (3 when Monday is 0).
  return static_cast<int>(((day() + 3) % 7 + 7) % 7);
}

std::int64_t RequestContext::day() const { return floor_div(local_seconds, kSecondsPerDay); }

// ---- Parsing ----------------------------------------------------------------------------------

namespace {

// "YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|±HH:MM|±HHMM]" → local wall-clock seconds (the offset is checked
// and then ignored: hours of day are the client's).
std::int64_t parse_iso_time(const std::string& text) {
  const auto fail = [&](const std::string& why) -> std::int64_t {
    throw RequestError("time", "'" + text.substr(0, 64) + "' is not an ISO-8601 time (" + why +
                                   "); expected e.g. 2026-12-04T08:15:00+01:00 or unix seconds");
  };
  std::size_t pos = 0;
  const auto digits = [&](std::size_t count, const char* what) -> std::int64_t {
    std::int64_t value = 0;
    for (std::size_t i = 0; i < count; ++i, ++pos) {
      if (pos >= text.size() || text[pos] < '0' || text[pos] > '9') fail(std::string("bad ") + what);
      value = value * 10 + (text[pos] - '0');
    }
    return value;
  };
  const auto expect = [&](char c, const char* what) {
    if (pos >= text.size() || text[pos] != c) fail(std::string("expected ") + what);
    ++pos;
  };
  const std::int64_t year = digits(4, "year");
  expect('-', "'-' after the year");
  const auto month = static_cast<unsigned>(digits(2, "month"));
  expect('-', "'-' after the month");
  const auto day = static_cast<unsigned>(digits(2, "day"));
  if (month < 1 || month > 12) fail("month out of range");
  if (day < 1 || day > days_in_month(year, month)) fail("day out of range");
  if (pos >= text.size() || (text[pos] != 'T' && text[pos] != 't' && text[pos] != ' '))
    fail("no time of day");
  ++pos;
  const std::int64_t hour = digits(2, "hour");
  expect(':', "':' after the hour");
  const std::int64_t minute = digits(2, "minute");
  std::int64_t second = 0;
  if (pos < text.size() && text[pos] == ':') {
    ++pos;
    second = digits(2, "second");
    if (pos < text.size() && (text[pos] == '.' || text[pos] == ',')) {
      ++pos;
      const std::size_t start = pos;
      while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos;
      if (pos == start) fail("bad fraction of a second");
    }
  }
  if (hour > 23 || minute > 59 || second > 60) fail("time of day out of range");
  if (pos < text.size()) {
    if (text[pos] == 'Z' || text[pos] == 'z') {
      ++pos;
    } else if (text[pos] == '+' || text[pos] == '-') {
      ++pos;
      const std::int64_t offset_hours = digits(2, "offset");
      if (pos < text.size() && text[pos] == ':') ++pos;
      const std::int64_t offset_minutes = digits(2, "offset");
      if (offset_hours > 18 || offset_minutes > 59) fail("offset out of range");
    } else {
      fail("unexpected text after the time");
    }
  }
  if (pos != text.size()) fail("unexpected text at the end");
  return days_from_civil(year, month, day) * kSecondsPerDay + hour * 3600 + minute * 60 +
         std::min<std::int64_t>(second, 59);
}

std::string text_field(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return {};
  if (!it->is_string()) throw RequestError(name, "expected a string, got " + std::string(it->type_name()));
  std::string value = it->get<std::string>();
  if (value.size() > kMaxTextLength) {
    throw RequestError(name, "longer than " + std::to_string(kMaxTextLength) + " characters");
  }
  return value;
}

RequestContext context_from_json(const json& object, std::int64_t now_unix) {
  if (!object.is_object()) {
    throw RequestError("", "the context should be a JSON object, got " + std::string(object.type_name()));
  }
  RequestContext context;
  context.local_seconds = now_unix;
  if (const auto it = object.find("time"); it != object.end() && !it->is_null()) {
    if (it->is_number()) {
      // Up to about 30,000 years either side of 1970; also keeps huge unsigned values from wrapping.
      const double seconds = it->get<double>();
      if (!std::isfinite(seconds) || std::abs(seconds) > 1e12)
        throw RequestError("time", "unix seconds out of range");
      context.local_seconds = it->is_number_integer() && !it->is_number_unsigned()
                                  ? it->get<std::int64_t>()
                                  : static_cast<std::int64_t>(std::floor(seconds));
    } else if (it->is_string()) {
      context.local_seconds = parse_iso_time(it->get<std::string>());
    } else {
      throw RequestError("time",
                         "expected an ISO-8601 string or unix seconds, got " + std::string(it->type_name()));
    }
  }
  context.location = text_field(object, "location");
  context.app = text_field(object, "app");
  if (const auto it = object.find("recent"); it != object.end() && !it->is_null()) {
    if (!it->is_array())
      throw RequestError("recent", "expected an array of class names, got " + std::string(it->type_name()));
    if (it->size() > kMaxRecentItems) {
      throw RequestError("recent", "more than " + std::to_string(kMaxRecentItems) + " entries");
    }
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& item = (*it)[i];
      const std::string field = "recent[" + std::to_string(i) + "]";
      if (!item.is_string())
        throw RequestError(field, "expected a string, got " + std::string(item.type_name()));
      if (item.get_ref<const std::string&>().size() > kMaxTextLength) {
        throw RequestError(field, "longer than " + std::to_string(kMaxTextLength) + " characters");
      }
      context.recent.push_back(item.get<std::string>());
    }
    if (context.recent.size() > RequestContext::kMaxRecent) {
      context.recent.erase(context.recent.begin(),
                           context.recent.end() - static_cast<std::ptrdiff_t>(RequestContext::kMaxRecent));
    }
  }
  return context;
}

json parse_body(const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers beyond a double
    throw RequestError("", std::string("the body is not valid JSON: ") + e.what());
  }
}

std::string format_local_time(std::int64_t local_seconds) {
  const std::int64_t day = floor_div(local_seconds, kSecondsPerDay);
  const std::int64_t seconds = local_seconds - day * kSecondsPerDay;
  const Civil civil = civil_from_days(day);
  char text[64];
  std::snprintf(text, sizeof text, "%04lld-%02u-%02uT%02lld:%02lld:%02lld",
                static_cast<long long>(civil.year), civil.month, civil.day,
                static_cast<long long>(seconds / 3600), static_cast<long long>(seconds / 60 % 60),
                static_cast<long long>(seconds % 60));
  return text;
}

json context_json(const RequestContext& context) {
  json object = {{"time", format_local_time(context.local_seconds)},
                 {"location", context.location},
                 {"app", context.app},
                 {"recent", context.recent}};
  return object;
}

}  // namespace

RequestContext parse_request_context(const std::string& text, std::int64_t now_unix) {
  return context_from_json(parse_body(text), now_unix);
}

std::string to_json(const RequestContext& context) { return context_json(context).dump(); }

// ---- The request log --------------------------------------------------------------------------

namespace {

[[noreturn]] void fail_file(const std::string& path, const std::string& what) {
  throw FileError("request log " + path + ": " + what + ": " + std::strerror(errno));
}

Observation observation_from_line(const std::string& line) {
  const json object = parse_body(line);
  if (!object.is_object()) throw RequestError("", "a log line should be a JSON object");
  if (!object.contains("time")) throw RequestError("time", "missing");
  Observation observation;
  observation.context = context_from_json(object, 0);
  const auto model = object.find("model");
  if (model == object.end()) throw RequestError("model", "missing");
  if (!model->is_string() || model->get_ref<const std::string&>().empty()) {
    throw RequestError("model", "expected a model name (a non-empty string)");
  }
  observation.model = model->get<std::string>();
  return observation;
}

}  // namespace

RequestLog::RequestLog(std::string path, bool sync_each_line)
    : path_(std::move(path)), sync_(sync_each_line) {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_file(path_, "cannot open");
  struct stat info {};
  if (::fstat(fd_, &info) != 0) fail_file(path_, "cannot stat");
  const auto size = static_cast<std::size_t>(info.st_size);
  if (size == 0) return;
  // Find the start of the last line; a tail without its newline is a torn write unless it parses.
  std::string tail;
  std::size_t start = size;
  constexpr std::size_t kChunk = 4096;
  while (start > 0) {
    const std::size_t begin = start > kChunk ? start - kChunk : 0;
    std::string chunk(start - begin, '\0');
    if (::pread(fd_, chunk.data(), chunk.size(), static_cast<off_t>(begin)) !=
        static_cast<ssize_t>(chunk.size())) {
      fail_file(path_, "cannot read");
    }
    tail.insert(0, chunk);
    start = begin;
    const std::size_t newline = tail.rfind('\n');
    if (newline != std::string::npos) {
      start += newline + 1;
      tail.erase(0, newline + 1);
      break;
    }
  }
  if (tail.empty()) return;  // ends with a newline
  bool complete = true;
  try {
    observation_from_line(tail);
  } catch (const ParseError&) {
    complete = false;
  }
  if (complete) {
    if (::write(fd_, "\n", 1) != 1) fail_file(path_, "cannot write");
  } else {
    if (::ftruncate(fd_, static_cast<off_t>(start)) != 0) fail_file(path_, "cannot cut the torn last line");
    torn_bytes_removed_ = size - start;
  }
}

RequestLog::~RequestLog() {
  if (fd_ >= 0) ::close(fd_);
}

void RequestLog::append(const Observation& observation) {
  if (observation.model.empty()) throw RequestError("model", "expected a model name (a non-empty string)");
  json object = context_json(observation.context);
  object["model"] = observation.model;
  const std::string line = object.dump() + "\n";
  std::lock_guard lock(mutex_);
  // One write() per line (O_APPEND): a crash tears at most this line, which reading skips.
  std::size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + written, line.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_file(path_, "cannot append");
    }
    written += static_cast<std::size_t>(n);
  }
  if (sync_ && ::fsync(fd_) != 0) fail_file(path_, "cannot sync");
}

std::vector<Observation> read_request_log(const std::string& path, LogReadReport* report) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError("request log " + path + ": cannot open");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::vector<Observation> observations;
  LogReadReport local;
  std::size_t pos = 0;
  std::size_t line_number = 0;
  while (pos < text.size()) {
    ++line_number;
    const std::size_t newline = text.find('\n', pos);
    const bool last_without_newline = newline == std::string::npos;
    const std::string line = text.substr(pos, last_without_newline ? std::string::npos : newline - pos);
    pos = last_without_newline ? text.size() : newline + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      observations.push_back(observation_from_line(line));
    } catch (const RequestError& e) {
      if (last_without_newline) {
        local.torn_last_line = true;
        break;
      }
      throw RequestError(e.field(), path + ":" + std::to_string(line_number) + ": " + e.what());
    }
  }
  local.lines = observations.size();
  if (report) *report = local;
  return observations;
}

// ---- Features ---------------------------------------------------------------------------------

std::uint64_t hash_token(std::string_view text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    hash ^= byte;
    hash *= 1099511628211ull;
  }
  return hash;
}

void context_features(const RequestContext& context, const FeatureLayout& layout, float* out) {
  std::fill(out, out + layout.size(), 0.0f);
  const double angle = 2.0 * std::numbers::pi * context.hour_of_day() / 24.0;
  out[0] = static_cast<float>(std::sin(angle));
  out[1] = static_cast<float>(std::cos(angle));
  out[2 + context.weekday()] = 1.0f;
  if (!context.location.empty()) {
    out[layout.location_offset() + hash_token(context.location) % layout.location_buckets] = 1.0f;
  }
  if (!context.app.empty()) out[layout.app_offset() + hash_token(context.app) % layout.app_buckets] = 1.0f;
  if (!context.recent.empty()) {
    const float weight = 1.0f / static_cast<float>(context.recent.size());
    for (const std::string& label : context.recent) {
      out[layout.recent_offset() + hash_token(label) % layout.recent_buckets] += weight;
    }
  }
}

std::vector<float> context_features(const RequestContext& context, const FeatureLayout& layout) {
  std::vector<float> features(static_cast<std::size_t>(layout.size()));
  context_features(context, layout, features.data());
  return features;
}

// ---- ContextModel -----------------------------------------------------------------------------

namespace {

constexpr const char* kTask = "context-ranking";
constexpr const char* kFeatureVersion = "context.feature_version";
constexpr const char* kLocationBuckets = "context.location_buckets";
constexpr const char* kAppBuckets = "context.app_buckets";
constexpr const char* kRecentBuckets = "context.recent_buckets";

LayerSpec make_layer(std::string name, std::string type, std::vector<std::string> inputs,
                     std::vector<std::string> outputs) {
  LayerSpec layer;
  layer.name = std::move(name);
  layer.type = std::move(type);
  layer.inputs = std::move(inputs);
  layer.outputs = std::move(outputs);
  return layer;
}

LayerSpec inner_product(const std::string& name, const std::string& input, std::int64_t outputs) {
  LayerSpec layer = make_layer(name, "InnerProduct", {input}, {name});
  layer.attrs.set("num_output", outputs);
  layer.attrs.set("weight_filler.type", std::string("xavier"));
  layer.attrs.set("bias_filler.type", std::string("constant"));
  return layer;
}

// features → ip1 → relu1 → ip2, then the loss (training) or the probabilities (ranking).
Graph classifier_graph(const FeatureLayout& layout, int hidden, std::size_t models, std::int64_t batch,
                       bool training) {
  Graph graph;
  graph.name = "context_model";
  graph.inputs.push_back({"features", Shape{batch, layout.size()}});
  if (training) graph.inputs.push_back({"label", Shape{batch}});
  graph.layers.push_back(inner_product("ip1", "features", hidden));
  graph.layers.push_back(make_layer("relu1", "ReLU", {"ip1"}, {"relu1"}));
  graph.layers.push_back(inner_product("ip2", "relu1", static_cast<std::int64_t>(models)));
  if (training) {
    graph.layers.push_back(make_layer("loss", "SoftmaxWithLoss", {"ip2", "label"}, {"loss"}));
    graph.outputs = {"loss"};
  } else {
    graph.layers.push_back(make_layer("prob", "Softmax", {"ip2"}, {"prob"}));
    graph.outputs = {"prob"};
  }
  return graph;
}

FeatureLayout layout_of(const ContextModelOptions& options) {
  if (options.location_buckets < 1 || options.app_buckets < 1 || options.recent_buckets < 1 ||
      options.hidden < 1 || options.batch < 1 || options.epochs < 1 || options.max_iterations < 1) {
    throw ModelError(
        "context model: buckets, hidden units, batch, epochs and max_iterations must be at least 1");
  }
  return {options.location_buckets, options.app_buckets, options.recent_buckets};
}

}  // namespace

struct ContextModel::Impl {
  ContextModelOptions options;
  FeatureLayout layout;
  std::unique_ptr<RequestLog> log;
  std::vector<std::string> models;
  Graph graph;  // the trained inference graph
  mutable std::mutex mutex;
  mutable std::unique_ptr<Net> net;

  void install(Graph trained) {
    graph = std::move(trained);
    NetOptions options;
    options.threads = 1;  // tiny matrices: threads would only contend
    net = std::make_unique<Net>(graph, options);
  }
};

ContextModel::ContextModel(ContextModelOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->layout = layout_of(options);
  impl_->options = options;
}

ContextModel::ContextModel(const std::string& log_path, ContextModelOptions options) : ContextModel(options) {
  impl_->log = std::make_unique<RequestLog>(log_path);
}

ContextModel::~ContextModel() = default;
ContextModel::ContextModel(ContextModel&&) noexcept = default;
ContextModel& ContextModel::operator=(ContextModel&&) noexcept = default;

void ContextModel::observe(const RequestContext& context, const std::string& model) {
  if (!impl_->log) throw ModelError("context model: observe() needs a request log (construct with its path)");
  impl_->log->append({context, model});
}

TrainReport ContextModel::train() {
  if (!impl_->log) throw ModelError("context model: train() without observations needs a request log");
  return train(read_request_log(impl_->log->path()));
}

TrainReport ContextModel::train(const std::vector<Observation>& observations) {
  if (observations.empty()) throw ModelError("context model: no observations to train on");
  const auto started = std::chrono::steady_clock::now();
  const ContextModelOptions& options = impl_->options;
  const FeatureLayout& layout = impl_->layout;

  std::set<std::string> names;
  for (const Observation& o : observations) names.insert(o.model);
  std::vector<std::string> models(names.begin(), names.end());
  std::map<std::string, float> label_of;
  for (std::size_t i = 0; i < models.size(); ++i) label_of[models[i]] = static_cast<float>(i);

  const std::size_t n = observations.size();
  const auto width = static_cast<std::size_t>(layout.size());
  std::vector<float> features(n * width);
  std::vector<float> labels(n);
  for (std::size_t i = 0; i < n; ++i) {
    context_features(observations[i].context, layout, features.data() + i * width);
    labels[i] = label_of.at(observations[i].model);
  }

  const auto batch =
      static_cast<std::int64_t>(std::min<std::size_t>(static_cast<std::size_t>(options.batch), n));
  const std::int64_t per_epoch =
      static_cast<std::int64_t>((n + static_cast<std::size_t>(batch) - 1) / static_cast<std::size_t>(batch));
  const std::int64_t iterations = std::min(options.max_iterations, per_epoch * options.epochs);

  NetOptions net_options;
  net_options.training = true;
  net_options.seed = options.seed;
  net_options.threads = 1;
  Net net(classifier_graph(layout, options.hidden, models.size(), batch, true), net_options);
  train::SolverConfig config;
  config.type = train::SolverType::adam;
  config.base_lr = options.learning_rate;
  config.momentum = 0.9;
  config.momentum2 = 0.999;
  config.weight_decay = options.weight_decay;
  train::Solver solver(config);

  std::mt19937_64 rng(options.seed);
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::shuffle(order.begin(), order.end(), rng);
  std::size_t cursor = 0;
  std::vector<float> batch_features(static_cast<std::size_t>(batch) * width);
  std::vector<float> batch_labels(static_cast<std::size_t>(batch));
  TrainReport report;
  double epoch_loss = 0.0;
  std::int64_t epoch_steps = 0;
  bool first_epoch = true;
  std::vector<Parameter> params;
  for (std::int64_t iter = 0; iter < iterations; ++iter) {
    for (std::int64_t b = 0; b < batch; ++b) {
      if (cursor == n) {
        std::shuffle(order.begin(), order.end(), rng);
        cursor = 0;
      }
      const std::size_t example = order[cursor++];
      std::copy_n(features.data() + example * width, width,
                  batch_features.data() + static_cast<std::size_t>(b) * width);
      batch_labels[static_cast<std::size_t>(b)] = labels[example];
    }
    net.input("features").copy_from(Tensor::from(Shape{batch, layout.size()}, batch_features));
    net.input("label").copy_from(Tensor::from(Shape{batch}, batch_labels));
    net.forward();
    const float loss = net.loss();
    if (!std::isfinite(loss)) {
      throw ModelError("context model: the training loss became " + std::to_string(loss) + " at iteration " +
                       std::to_string(iter));
    }
    net.backward();
    if (params.empty()) params = net.parameters();
    solver.update(params, iter);
    epoch_loss += loss;
    ++epoch_steps;
    if (epoch_steps == per_epoch || iter + 1 == iterations) {
      const double mean = epoch_loss / static_cast<double>(epoch_steps);
      if (first_epoch) report.first_loss = mean;
      report.final_loss = mean;
      first_epoch = false;
      epoch_loss = 0.0;
      epoch_steps = 0;
    }
  }

  Graph graph = classifier_graph(layout, options.hidden, models.size(), 1, false);
  for (LayerSpec& layer : graph.layers) {
    for (const Tensor& weight : net.weights(layer.name))
      layer.weights.push_back(weight.to(Device::cpu()).clone());
  }
  graph.metadata.name = "context_model";
  graph.metadata.task = kTask;
  graph.metadata.description =
      "ranks models for a request context (espresso serve's preloader, docs/context_model.md)";
  graph.metadata.labels = models;
  graph.metadata.metrics = {{kFeatureVersion, 1.0},
                            {kLocationBuckets, static_cast<double>(layout.location_buckets)},
                            {kAppBuckets, static_cast<double>(layout.app_buckets)},
                            {kRecentBuckets, static_cast<double>(layout.recent_buckets)}};
  {
    std::lock_guard lock(impl_->mutex);
    impl_->models = models;
    impl_->install(std::move(graph));
  }

  std::size_t correct = 0;
  for (const Observation& o : observations) {
    const std::vector<ModelScore> ranked = rank(o.context);
    if (ranked.front().model == o.model) ++correct;
  }
  report.examples = n;
  report.models = models.size();
  report.iterations = iterations;
  report.train_accuracy = static_cast<double>(correct) / static_cast<double>(n);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

bool ContextModel::trained() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->net != nullptr;
}

std::vector<ModelScore> ContextModel::rank(const RequestContext& context) const {
  const std::vector<float> features = context_features(context, impl_->layout);
  std::vector<float> probabilities;
  std::vector<std::string> models;
  {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->net) throw ModelError("context model: rank() before train() or load()");
    impl_->net->input("features").copy_from(Tensor::from(Shape{1, impl_->layout.size()}, features));
    impl_->net->forward();
    probabilities = impl_->net->tensor("prob").to(Device::cpu()).to_vector();
    models = impl_->models;
  }
  std::vector<ModelScore> ranked;
  ranked.reserve(models.size());
  for (std::size_t i = 0; i < models.size(); ++i) ranked.push_back({models[i], probabilities.at(i)});
  std::sort(ranked.begin(), ranked.end(), [](const ModelScore& a, const ModelScore& b) {
    return a.score != b.score ? a.score > b.score : a.model < b.model;
  });
  return ranked;
}

std::vector<std::string> ContextModel::models() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->models;
}

const ContextModelOptions& ContextModel::options() const { return impl_->options; }

void ContextModel::save(const std::string& path) const {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->net) throw ModelError("context model: save() before train()");
  save_package(impl_->graph, path);
}

ContextModel ContextModel::load(const std::string& path) {
  Graph graph = load_package(path);
  const auto fail = [&](const std::string& why) -> ModelError {
    return ModelError("context model " + path + ": " + why);
  };
  if (graph.metadata.task != kTask) throw fail("not a context model (task '" + graph.metadata.task + "')");
  const auto metric = [&](const char* key) -> int {
    const auto it = graph.metadata.metrics.find(key);
    if (it == graph.metadata.metrics.end()) throw fail(std::string("metadata.metrics lacks ") + key);
    if (!(it->second >= 1.0 && it->second <= 1e6) || it->second != std::floor(it->second)) {
      throw fail(std::string("metadata.metrics.") + key + " is not a positive integer");
    }
    return static_cast<int>(it->second);
  };
  if (metric(kFeatureVersion) != 1)
    throw fail("feature version " + std::to_string(metric(kFeatureVersion)) + " is unknown");
  ContextModelOptions options;
  options.location_buckets = metric(kLocationBuckets);
  options.app_buckets = metric(kAppBuckets);
  options.recent_buckets = metric(kRecentBuckets);
  const FeatureLayout layout = layout_of(options);
  if (graph.inputs.size() != 1 || graph.inputs[0].name != "features" || graph.inputs[0].shape.rank() != 2 ||
      graph.inputs[0].shape[1] != layout.size()) {
    throw fail("its input should be 'features' of " + std::to_string(layout.size()) + " values");
  }
  if (graph.outputs != std::vector<std::string>{"prob"}) throw fail("its output should be 'prob'");
  if (graph.metadata.labels.empty()) throw fail("it names no models (metadata.labels)");
  ContextModel model(options);
  model.impl_->models = graph.metadata.labels;
  model.impl_->install(std::move(graph));
  // The output must have one probability per model.
  const std::vector<ModelScore> probe = model.rank(RequestContext{});
  if (probe.size() != model.impl_->models.size()) throw fail("output size differs from the number of labels");
  return model;
}

// ---- Preloader --------------------------------------------------------------------------------

Preloader::Preloader(Ranker ranker, std::map<std::string, std::size_t> model_bytes, std::size_t budget_bytes,
                     PreloaderOptions options)
    : ranker_(std::move(ranker)), bytes_(std::move(model_bytes)), budget_(budget_bytes), options_(options) {
  if (budget_ == 0) throw ModelError("preloader: the budget must be more than 0 bytes");
  if (!ranker_) throw ModelError("preloader: no ranker");
  if (!(options_.budget_fraction > 0.0 && options_.budget_fraction <= 1.0)) {
    throw ModelError("preloader: budget_fraction must be in (0, 1]");
  }
}

Preloader::Preloader(std::shared_ptr<const ContextModel> model,
                     std::map<std::string, std::size_t> model_bytes, std::size_t budget_bytes,
                     PreloaderOptions options)
    : Preloader(
          [model](const RequestContext& context) {
            if (!model) throw ModelError("preloader: no context model");
            return model->rank(context);
          },
          std::move(model_bytes), budget_bytes, options) {}

std::vector<ModelScore> Preloader::rank(const RequestContext& context) const { return ranker_(context); }

std::vector<std::string> Preloader::choose_within(const std::vector<ModelScore>& ranked,
                                                  std::size_t budget) const {
  std::vector<std::string> chosen;
  std::size_t left = budget;
  for (const ModelScore& candidate : ranked) {
    if (candidate.score < options_.min_score) break;
    const auto size = bytes_.find(candidate.model);
    if (size == bytes_.end() || size->second > left) continue;
    chosen.push_back(candidate.model);
    left -= size->second;
  }
  return chosen;
}

std::vector<std::string> Preloader::choose(const std::vector<ModelScore>& ranked) const {
  return choose_within(ranked,
                       static_cast<std::size_t>(static_cast<double>(budget_) * options_.budget_fraction));
}

std::vector<std::string> Preloader::plan(const RequestContext& context) const {
  return choose(ranker_(context));
}

std::vector<std::string> Preloader::plan(const std::vector<RequestContext>& contexts) const {
  std::vector<std::vector<ModelScore>> rankings;
  rankings.reserve(contexts.size());
  for (const RequestContext& context : contexts) rankings.push_back(ranker_(context));
  return choose(average(rankings));
}

std::vector<ModelScore> Preloader::average(const std::vector<std::vector<ModelScore>>& rankings) {
  std::map<std::string, double> sum;
  for (const auto& ranking : rankings) {
    for (const ModelScore& scored : ranking) sum[scored.model] += scored.score;
  }
  std::vector<ModelScore> averaged;
  averaged.reserve(sum.size());
  for (const auto& [model, total] : sum)
    averaged.push_back({model, total / static_cast<double>(rankings.size())});
  std::sort(averaged.begin(), averaged.end(), [](const ModelScore& a, const ModelScore& b) {
    return a.score != b.score ? a.score > b.score : a.model < b.model;
  });
  return averaged;
}

std::string Preloader::recommend(const std::string& body, std::int64_t now_unix) const {
  const json request = parse_body(body);
  const RequestContext context = context_from_json(request, now_unix);
  std::size_t top = 5;
  if (const auto it = request.find("top"); it != request.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 1000) {
      throw RequestError("top", "expected an integer from 1 to 1000");
    }
    top = static_cast<std::size_t>(it->get<std::int64_t>());
  }
  std::size_t budget = static_cast<std::size_t>(static_cast<double>(budget_) * options_.budget_fraction);
  if (const auto it = request.find("budget_bytes"); it != request.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1) {
      throw RequestError("budget_bytes", "expected a positive integer");
    }
    budget = static_cast<std::size_t>(it->get<std::int64_t>());
  }
  json models = json::array();
  for (const ModelScore& scored : ranker_(context)) {
    if (models.size() == top) break;
    json entry = {{"name", scored.model}, {"score", scored.score}};
    if (const auto size = bytes_.find(scored.model); size != bytes_.end()) entry["bytes"] = size->second;
    models.push_back(std::move(entry));
  }
  const json response = {{"models", models},
                         {"preload", choose_within(ranker_(context), budget)},
                         {"budget_bytes", budget},
                         {"context", context_json(context)}};
  return response.dump();
}

PreloadWindow::PreloadWindow(const Preloader& preloader, std::int64_t window_seconds)
    : preloader_(preloader), window_seconds_(std::max<std::int64_t>(window_seconds, 0)) {}

std::vector<std::string> PreloadWindow::after_request(const RequestContext& context) {
  std::vector<ModelScore> ranked = preloader_.rank(context);
  std::lock_guard lock(mutex_);
  const std::int64_t now = context.local_seconds;
  window_.emplace_back(now, std::move(ranked));
  std::erase_if(window_, [&](const auto& entry) { return entry.first < now - window_seconds_; });
  std::vector<std::vector<ModelScore>> rankings;
  rankings.reserve(window_.size());
  for (const auto& entry : window_) rankings.push_back(entry.second);
  return preloader_.choose(Preloader::average(rankings));
}

// ---- Replay -----------------------------------------------------------------------------------

ReplayResult replay_cache(const std::vector<Observation>& requests,
                          const std::map<std::string, std::size_t>& model_bytes, std::size_t budget_bytes,
                          const Preloader* preloader, std::int64_t window_seconds) {
  std::map<std::string, std::uint64_t> last_use;  // the resident models
  std::size_t used = 0;
  std::uint64_t clock = 0;
  const auto size_of = [&](const std::string& name) {
    const auto it = model_bytes.find(name);
    if (it == model_bytes.end()) throw ModelError("replay: model '" + name + "' has no size");
    if (it->second > budget_bytes) throw ModelError("replay: model '" + name + "' is larger than the budget");
    return it->second;
  };
  // Returns whether the model was resident.
  const auto touch = [&](const std::string& name) {
    if (auto it = last_use.find(name); it != last_use.end()) {
      it->second = ++clock;
      return true;
    }
    const std::size_t size = size_of(name);
    while (used + size > budget_bytes) {
      const auto victim = std::min_element(last_use.begin(), last_use.end(),
                                           [](const auto& a, const auto& b) { return a.second < b.second; });
      used -= model_bytes.at(victim->first);
      last_use.erase(victim);
    }
    used += size;
    last_use[name] = ++clock;
    return false;
  };
  ReplayResult result;
  result.hit.reserve(requests.size());
  std::optional<PreloadWindow> window;
  if (preloader) window.emplace(*preloader, window_seconds);
  for (const Observation& request : requests) {
    const bool hit = touch(request.model);
    ++result.requests;
    result.hit.push_back(hit);
    if (hit) {
      ++result.hits;
    } else {
      ++result.loads_on_request;
    }
    if (!window) continue;
    const std::vector<std::string> plan = window->after_request(request.context);
    for (auto it = plan.rbegin(); it != plan.rend(); ++it) {
      if (!touch(*it)) ++result.preloads;
    }
  }
  return result;
}

}  // namespace espresso::serve
