// NumPy .npy arrays (format versions 1 to 3, little-endian float32/float64, C order).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace espresso::data {

struct NpyArray {
  std::vector<std::int64_t> shape;
  std::vector<double> values;  // C order
};

// Parses the bytes of a .npy file; `name` is used in messages. Throws DataError saying what is
// wrong with the header or the data size.
NpyArray parse_npy(const std::string& bytes, const std::string& name);
// Reads and parses a .npy file; FileError when it cannot be read.
NpyArray read_npy(const std::string& path);

}  // namespace espresso::data
