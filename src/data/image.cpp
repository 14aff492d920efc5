#include "espresso/data.h"

#include <filesystem>
#include <memory>

#include "espresso/errors.h"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include "stb_image.h"
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include "stb_image_resize.h"

namespace espresso::data {

std::vector<std::uint8_t> resize_image(const std::vector<std::uint8_t>& pixels, int height, int width,
                                       int channels, int new_height, int new_width) {
  std::vector<std::uint8_t> resized(static_cast<std::size_t>(new_height) * new_width * channels);
  if (!stbir_resize_uint8(pixels.data(), width, height, 0, resized.data(), new_width, new_height, 0,
                          channels)) {
    throw DataError("cannot resize a " + std::to_string(width) + "x" + std::to_string(height) + " image to " +
                    std::to_string(new_width) + "x" + std::to_string(new_height));
  }
  return resized;
}

std::vector<float> load_image(const std::string& path, const ImageLayout& layout) {
  if (layout.channels != 1 && layout.channels != 3) {
    throw DataError(path + ": the net wants " + std::to_string(layout.channels) +
                    "-channel input; images can feed 1 (grayscale) or 3 (colour) channels");
  }
  if (layout.height <= 0 || layout.width <= 0) {
    throw DataError(path + ": invalid target size " + std::to_string(layout.height) + "x" +
                    std::to_string(layout.width));
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw FileError(path + ": no such file");
  int width = 0, height = 0, file_channels = 0;
  // stb converts to the requested channel count (luminance for grayscale).
  std::unique_ptr<stbi_uc, void (*)(void*)> decoded(
      stbi_load(path.c_str(), &width, &height, &file_channels, layout.channels), stbi_image_free);
  if (!decoded) throw DataError(path + ": cannot decode image (" + stbi_failure_reason() + ")");

  const int channels = layout.channels;
  std::vector<std::uint8_t> pixels(decoded.get(),
                                   decoded.get() + static_cast<std::size_t>(width) * height * channels);
  if (height != layout.height || width != layout.width) {
    pixels = resize_image(pixels, height, width, channels, layout.height, layout.width);
  }
  const std::size_t plane = static_cast<std::size_t>(layout.height) * layout.width;
  std::vector<float> planar(plane * static_cast<std::size_t>(channels));
  for (int c = 0; c < channels; ++c) {
    const int source = layout.bgr && channels == 3 ? 2 - c : c;
    for (std::size_t i = 0; i < plane; ++i) {
      planar[static_cast<std::size_t>(c) * plane + i] =
          pixels[i * static_cast<std::size_t>(channels) + source];
    }
  }
  return planar;
}

}  // namespace espresso::data
