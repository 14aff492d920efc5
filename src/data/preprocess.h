// Input preprocessing as Caffe's transform_param does it: (pixel - mean[c]) * scale.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace espresso::data {

struct Preprocess {
  std::vector<float> mean;  // one per channel; empty for none
  float scale = 1.0f;

  // Writes `count` planar images of `channels` x `plane` values, normalised, to `out`.
  template <class T>
  void apply(const T* pixels, std::int64_t count, std::int64_t channels, std::int64_t plane,
             float* out) const {
    for (std::int64_t n = 0; n < count; ++n) {
      for (std::int64_t c = 0; c < channels; ++c) {
        const float m = mean.empty() ? 0.0f : mean[static_cast<std::size_t>(c)];
        const std::int64_t offset = (n * channels + c) * plane;
        for (std::int64_t i = 0; i < plane; ++i) {
          out[offset + i] = (static_cast<float>(pixels[offset + i]) - m) * scale;
        }
      }
    }
  }
};

// `text` is either comma-separated values (one per channel, or one for all channels) or the path
// of a .npy file shaped (C,) or (C, H, W), whose per-channel average is used. Throws DataError
// when the values do not match `channels`.
std::vector<float> parse_mean(const std::string& text, int channels);

}  // namespace espresso::data
