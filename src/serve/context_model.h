// Internals of the context model (include/espresso/context_model.h): the feature layout shared by
// training and ranking, exposed for the tests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "espresso/context_model.h"

namespace espresso::serve {

// The feature vector: [sin, cos of the hour angle] [weekday one-hot: 7] [location bucket one-hot]
// [app bucket one-hot] [recent classes: bucket counts / number of recent classes]. An empty location or
// app sets no bucket.
struct FeatureLayout {
  int location_buckets = 64;
  int app_buckets = 32;
  int recent_buckets = 64;

  static constexpr int kTimeFeatures = 2 + 7;
  int size() const { return kTimeFeatures + location_buckets + app_buckets + recent_buckets; }
  int location_offset() const { return kTimeFeatures; }
  int app_offset() const { return location_offset() + location_buckets; }
  int recent_offset() const { return app_offset() + app_buckets; }
};

// FNV-1a (64 bit) of the ASCII-lower-cased string: stable across platforms and runs.
std::uint64_t hash_token(std::string_view text);

// Writes the features of `context` into `out` (layout.size() floats).
void context_features(const RequestContext& context, const FeatureLayout& layout, float* out);
std::vector<float> context_features(const RequestContext& context, const FeatureLayout& layout);

// Civil-calendar conversions (proleptic Gregorian, UTC-like, no leap seconds).
std::int64_t days_from_civil(std::int64_t year, unsigned month, unsigned day);

}  // namespace espresso::serve
