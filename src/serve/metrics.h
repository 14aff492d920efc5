// The server's counters and histograms, written in Prometheus' text exposition format (version 0.0.4).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "espresso/model_pool.h"

namespace espresso::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // "NAME_bucket{LABELS,le=...} N" lines, then _sum and _count; `labels` is `key="value"` or empty.
  void write(std::string& out, const std::string& name, const std::string& labels) const;
  std::int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::int64_t> counts_;  // per bucket, not cumulative; one more for +Inf
  double sum_ = 0;
  std::int64_t count_ = 0;
};

class Metrics {
 public:
  // A request finished: its model ("" when none applies), HTTP status and seconds taken.
  void request(const std::string& model, int status, double seconds);
  void batch(const std::string& model, std::int64_t samples);
  // The whole exposition, the pool's gauges and counters included.
  std::string text(const ModelPoolStats& pool, int in_flight) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, std::int64_t> requests_;
  std::map<std::string, Histogram> latency_;
  std::map<std::string, Histogram> batch_size_;
};

// A label value with \, " and newlines escaped.
std::string label_value(const std::string& text);

}  // namespace espresso::serve
