// Decoding untrusted image bytes through stb_image, with the declared size checked first.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "espresso/data.h"

namespace espresso::data {

struct DecodedImage {
  int width = 0;
  int height = 0;
  int channels = 0;         // of `pixels`
  int stored_channels = 0;  // in the file
  std::vector<std::uint8_t> pixels;  // interleaved, height x width x channels
};

// Reads the header first and throws LimitError naming `where` when width x height exceeds
// Limits::max_image_pixels, so a small file declaring a huge image (a decompression bomb) is refused
// before stb allocates for it; DataError when the bytes are not a decodable image. `channels` 0 keeps
// the file's channel count, 1..4 converts.
DecodedImage decode_image(std::span<const std::uint8_t> bytes, int channels, const std::string& where);

// The same for a file.
DecodedImage decode_image_file(const std::string& path, int channels);

// decode_image, then converted to `layout` as load_image does.
std::vector<float> image_to_layout(std::span<const std::uint8_t> bytes, const ImageLayout& layout,
                                   const std::string& where);

}  // namespace espresso::data
