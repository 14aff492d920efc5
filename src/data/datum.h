// Caffe's Datum records: one labelled image as raw 8-bit planar bytes, float values or an encoded
// image file (JPEG, PNG, ...).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace espresso::data {

struct Sample {
  std::int64_t channels = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;
  std::vector<float> values;  // channels x height x width, in [0, 255] for byte data
  int label = 0;
};

// A serialised Datum of planar bytes (channels x height x width).
std::string encode_datum(const std::uint8_t* pixels, std::int64_t channels, std::int64_t height,
                         std::int64_t width, int label);

// A serialised Datum of float values (float_data), e.g. the character indices of a text.
std::string encode_datum_floats(const std::vector<float>& values, std::int64_t channels, std::int64_t height,
                                std::int64_t width, int label);

// Decodes a serialised Datum into `out`, reusing its storage. Encoded images become planar BGR (or
// gray with one channel). Throws DataError naming `where` (the database and record) when the record
// is not a Datum or its sizes disagree.
void decode_datum(std::string_view bytes, Sample& out, const std::string& where);

}  // namespace espresso::data
