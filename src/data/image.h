// Image files (JPEG, PNG, BMP, ... through stb_image) decoded to planar float values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace espresso::data {

struct ImageLayout {
  int channels = 3;  // 1 (grayscale) or 3 (colour)
  int height = 0;
  int width = 0;
  bool bgr = true;  // Caffe's channel order for colour images
};

// Decodes `path`, converts it to the layout's channel count, resizes it to height x width and
// returns planar C x H x W values in [0, 255]. Throws DataError naming the file when it cannot
// be decoded or the layout is not supported.
std::vector<float> load_image(const std::string& path, const ImageLayout& layout);

// Resizes an interleaved 8-bit image (H x W x channels) with stb's default filter.
std::vector<std::uint8_t> resize_image(const std::vector<std::uint8_t>& pixels, int height, int width,
                                       int channels, int new_height, int new_width);

}  // namespace espresso::data
