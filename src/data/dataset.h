// Labelled image datasets held in memory as 8-bit planar images (N x C x H x W).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace espresso::data {

enum class Split { train, test };

// "train" or "test"; throws DataError otherwise.
Split parse_split(const std::string& text);
const char* split_name(Split split);

struct LabeledImages {
  std::int64_t count = 0;
  std::int64_t channels = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;
  std::vector<std::uint8_t> pixels;  // count x channels x height x width
  std::vector<std::uint8_t> labels;  // one per image
  std::string description;           // where the images came from, for messages

  std::int64_t image_size() const { return channels * height * width; }
  const std::uint8_t* image(std::int64_t index) const {
    return pixels.data() + static_cast<std::size_t>(index * image_size());
  }
};

enum class DatasetKind { mnist, fashion_mnist, cifar10 };

// "mnist", "fashion-mnist" or "cifar10"; throws DataError listing the known names otherwise.
DatasetKind parse_dataset_kind(const std::string& text);

// Reads one split of a dataset from its usual on-disk layout in `dir`; throws DataError or
// FileError naming the file and the problem.
LabeledImages load_dataset(DatasetKind kind, const std::string& dir, Split split);

}  // namespace espresso::data
