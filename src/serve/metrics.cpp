#include "serve/metrics.h"

#include <cstdio>

namespace espresso::serve {

namespace {

std::string number(double value) {
  char text[64];
  std::snprintf(text, sizeof text, "%.9g", value);
  return text;
}

const std::vector<double>& latency_bounds() {
  static const std::vector<double> bounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
  return bounds;
}

const std::vector<double>& batch_bounds() {
  static const std::vector<double> bounds = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  return bounds;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

std::string label_value(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  std::size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& labels) const {
  const std::string prefix = labels.empty() ? "" : labels + ",";
  std::int64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += name + "_bucket{" + prefix + "le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + braces + " " + number(sum_) + "\n";
  out += name + "_count" + braces + " " + std::to_string(count_) + "\n";
}

void Metrics::request(const std::string& model, int status, double seconds) {
  std::lock_guard lock(mutex_);
  ++requests_[{model, status}];
  latency_.try_emplace(model, latency_bounds()).first->second.observe(seconds);
}

void Metrics::batch(const std::string& model, std::int64_t samples) {
  std::lock_guard lock(mutex_);
  batch_size_.try_emplace(model, batch_bounds()).first->second.observe(static_cast<double>(samples));
}

std::string Metrics::text(const ModelPoolStats& pool, int in_flight) const {
  std::lock_guard lock(mutex_);
  std::string out;
  header(out, "espresso_requests_total", "counter",
         "Requests by model (empty for other endpoints) and HTTP status.");
  for (const auto& [key, count] : requests_) {
    out += "espresso_requests_total{model=\"" + label_value(key.first) + "\",status=\"" +
           std::to_string(key.second) + "\"} " + std::to_string(count) + "\n";
  }
  header(out, "espresso_request_duration_seconds", "histogram",
         "Time from the request's arrival to its answer.");
  for (const auto& [model, histogram] : latency_)
    histogram.write(out, "espresso_request_duration_seconds", "model=\"" + label_value(model) + "\"");
  header(out, "espresso_batch_size", "histogram", "Samples per batch the model ran.");
  for (const auto& [model, histogram] : batch_size_)
    histogram.write(out, "espresso_batch_size", "model=\"" + label_value(model) + "\"");
  header(out, "espresso_requests_in_flight", "gauge", "Inference requests admitted and not yet answered.");
  out += "espresso_requests_in_flight " + std::to_string(in_flight) + "\n";
  header(out, "espresso_resident_models", "gauge", "Models resident in the pool.");
  out += "espresso_resident_models " + std::to_string(pool.resident_models) + "\n";
  header(out, "espresso_resident_bytes", "gauge", "Weight bytes of the resident models.");
  out += "espresso_resident_bytes " + std::to_string(pool.resident_bytes) + "\n";
  header(out, "espresso_memory_budget_bytes", "gauge", "The pool's budget for resident weights.");
  out += "espresso_memory_budget_bytes " + std::to_string(pool.budget_bytes) + "\n";
  header(out, "espresso_model_loads_total", "counter", "Model loads, first ones and reloads after eviction.");
  out += "espresso_model_loads_total " + std::to_string(pool.loads) + "\n";
  header(out, "espresso_model_evictions_total", "counter", "Models evicted to make room.");
  out += "espresso_model_evictions_total " + std::to_string(pool.evictions) + "\n";
  return out;
}

}  // namespace espresso::serve
