// IDX files (the MNIST format), raw or gzip-compressed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace espresso::data {

struct IdxImages {
  std::int64_t count = 0;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<std::uint8_t> pixels;  // count x rows x cols
};

// An unsigned-byte image file (magic 2051, three dimensions). Throws DataError naming the file
// when the magic, dimensions or size are wrong, FileError when it cannot be read.
IdxImages read_idx_images(const std::string& path);
// An unsigned-byte label file (magic 2049, one dimension).
std::vector<std::uint8_t> read_idx_labels(const std::string& path);

// The MNIST / Fashion-MNIST layout: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in `dir`.
// Checks that the image and label counts agree.
LabeledImages load_mnist(const std::string& dir, Split split);

}  // namespace espresso::data
