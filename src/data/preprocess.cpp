#include "espresso/data.h"

#include <cmath>

#include "data/npy.h"
#include "espresso/errors.h"

namespace espresso::data {

namespace {

std::vector<float> mean_from_npy(const std::string& path, int channels) {
  const NpyArray array = read_npy(path);
  const int rank = static_cast<int>(array.shape.size());
  if ((rank != 1 && rank != 3) || array.shape[0] != channels) {
    std::string shape;
    for (std::int64_t d : array.shape) {
      if (!shape.empty()) shape += ", ";
      shape += std::to_string(d);
    }
    throw DataError(path + ": mean has shape (" + shape + "); expected (" + std::to_string(channels) +
                    ",) or (" + std::to_string(channels) + ", H, W) for the net's " +
                    std::to_string(channels) + "-channel input");
  }
  const std::size_t plane = array.values.size() / static_cast<std::size_t>(channels);
  if (plane == 0) throw DataError(path + ": mean array is empty");
  std::vector<float> mean;
  for (std::size_t c = 0; c < static_cast<std::size_t>(channels); ++c) {
    double sum = 0.0;
    for (std::size_t i = 0; i < plane; ++i) sum += array.values[c * plane + i];
    mean.push_back(static_cast<float>(sum / static_cast<double>(plane)));
  }
  return mean;
}

float parse_value(const std::string& item, const std::string& text) {
  std::size_t used = 0;
  float value = 0.0f;
  try {
    value = std::stof(item, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != item.size() || !std::isfinite(value)) {
    throw DataError("mean '" + text + "': '" + item +
                    "' is not a number (expected comma-separated values or a .npy file)");
  }
  return value;
}

}  // namespace

std::vector<float> parse_mean(const std::string& text, int channels) {
  if (text.ends_with(".npy")) return mean_from_npy(text, channels);
  std::vector<float> mean;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    mean.push_back(parse_value(item, text));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (mean.size() == 1) mean.assign(static_cast<std::size_t>(channels), mean[0]);
  if (mean.size() != static_cast<std::size_t>(channels)) {
    throw DataError("mean '" + text + "' has " + std::to_string(mean.size()) +
                    " values but the net's input has " + std::to_string(channels) + " channels");
  }
  return mean;
}

}  // namespace espresso::data
