// IDX files (MNIST's format) from bytes already in memory; read_idx_images/read_idx_labels
// (espresso/data.h) read files, gzipped or not, through these.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "espresso/data.h"

namespace espresso::data {

// Throws DataError naming `path` when the magic, the dimensions or the data size are wrong, LimitError
// when the header's dimensions exceed the tensor limits.
IdxImages parse_idx_images(const std::string& bytes, const std::string& path);
std::vector<std::uint8_t> parse_idx_labels(const std::string& bytes, const std::string& path);

}  // namespace espresso::data
