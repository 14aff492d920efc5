#include "espresso/data.h"

#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <filesystem>
#include <fstream>
#include <memory>

#include "data/image_decode.h"
#include "espresso/errors.h"
#include "espresso/limits.h"

#include "stb_image.h"
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

namespace {

std::uint32_t big_endian(const std::uint8_t* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = 0; i < bytes; ++i) v = v << 8 | p[i];
  return v;
}

// Width and height as the header of a PNG, JPEG or BMP declares them, read here rather than by stb,
// which refuses some huge sizes itself with a message that does not say which size; {0, 0} when the
// format is another or the header is cut short (stb then decides).
std::pair<std::int64_t, std::int64_t> declared_size(std::span<const std::uint8_t> b) {
  const std::size_t n = b.size();
  if (n >= 24 && std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0 && std::memcmp(b.data() + 12, "IHDR", 4) == 0)
    return {big_endian(b.data() + 16, 4), big_endian(b.data() + 20, 4)};
  if (n >= 26 && b[0] == 'B' && b[1] == 'M') {
    std::int32_t width = 0, height = 0;
    std::memcpy(&width, b.data() + 18, 4);
    std::memcpy(&height, b.data() + 22, 4);
    return {std::abs(std::int64_t{width}), std::abs(std::int64_t{height})};
  }
  if (n >= 4 && b[0] == 0xff && b[1] == 0xd8) {
    // Walk the markers to the first start-of-frame (SOF0..SOF15 except DHT, JPG and DAC).
    std::size_t at = 2;
    while (at + 9 < n) {
      if (b[at] != 0xff) return {0, 0};
      const std::uint8_t marker = b[at + 1];
      if (marker == 0xff) {
        ++at;
        continue;
      }
      const std::size_t length = big_endian(b.data() + at + 2, 2);
      if (marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc)
        return {big_endian(b.data() + at + 7, 2), big_endian(b.data() + at + 5, 2)};
      if (length < 2) return {0, 0};
      at += 2 + length;
    }
  }
  return {0, 0};
}

// Debian's stb_image (2022 snapshot) writes past its 257-entry Huffman tables when a JPEG DHT segment
// declares more than 256 codes (later stb releases refuse it). Every DHT segment is checked here
// first, walking the markers as stb does: segments by their length, entropy-coded data byte by byte.
void check_jpeg_huffman_tables(std::span<const std::uint8_t> b, const std::string& where) {
  const std::size_t n = b.size();
  // stb takes fill bytes (0xff) before the start-of-image marker as part of it.
  std::size_t soi = 1;
  while (soi < n && b[soi] == 0xff) ++soi;
  if (n < 2 || b[0] != 0xff || soi >= n || b[soi] != 0xd8) return;
  // stb reads 0 past the end of the file.
  const auto byte = [&](std::size_t i) -> unsigned { return i < n ? b[i] : 0; };
  std::size_t at = soi + 1;
  while (at + 3 < n) {
    const std::uint8_t marker = b[at + 1];
    if (b[at] != 0xff || marker == 0xff) {  // entropy-coded data, or a fill byte before a marker
      ++at;
      continue;
    }
    // A stuffed zero, TEM, a restart marker or SOI: no length follows.
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
      at += 2;
      continue;
    }
    if (marker == 0xd9) return;  // end of image
    const std::size_t length = big_endian(b.data() + at + 2, 2);
    if (marker == 0xc4) {
      std::size_t table = at + 4;
      for (std::int64_t left = static_cast<std::int64_t>(length) - 2; left > 0;) {
        unsigned codes = 0;
        for (std::size_t i = 1; i <= 16; ++i) codes += byte(table + i);
        if (codes > 256) {
          throw DataError(where + ": JPEG Huffman table at byte " + std::to_string(table) + " declares " +
                          std::to_string(codes) + " codes, more than 256");
        }
        table += 17 + codes;
        left -= 17 + static_cast<std::int64_t>(codes);
      }
    }
    at += 2 + length;
  }
}

// stb_image sizes its buffer for a PNG's image data from each chunk's declared length before reading
// it, so 80 bytes could ask for 2 GiB; a chunk that runs past the end of the file is refused here first.
void check_png_chunks(std::span<const std::uint8_t> b, const std::string& where) {
  if (b.size() < 8 || std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) != 0) return;
  for (std::size_t at = 8; at + 8 <= b.size();) {
    const std::size_t length = big_endian(b.data() + at, 4);
    const std::string type(reinterpret_cast<const char*>(b.data() + at + 4), 4);
    if (length > b.size() - at - 8) {
      throw DataError(where + ": PNG chunk at byte " + std::to_string(at) + " declares " + std::to_string(length) +
                      " bytes, past the end of the " + std::to_string(b.size()) + "-byte file");
    }
    if (type == "IEND") return;
    at += 12 + length;  // length, type, data, CRC
  }
}

// Binary PGM/PPM headers (P5/P6: width, height, maxval as decimal text between blanks and # comments) are
// read here before stb: Debian's stb accumulates their numbers in an int without a bound (an overflow at
// ten digits), reads 16-bit samples in host byte order (keeping the low byte) and, asked for another
// channel count, converts them with its 8-bit routine and reads past that buffer. Numbers above 10^8 and
// 16-bit images (maxval above 255) are refused.
void check_pnm_header(std::span<const std::uint8_t> b, const std::string& where) {
  if (b.size() < 2 || b[0] != 'P' || (b[1] != '5' && b[1] != '6')) return;
  const auto blank = [](std::uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };
  std::size_t at = 2;
  std::int64_t number[3] = {0, 0, 0};
  for (std::int64_t& value : number) {
    for (;;) {
      while (at < b.size() && blank(b[at])) ++at;
      if (at >= b.size() || b[at] != '#') break;
      while (at < b.size() && b[at] != '\n' && b[at] != '\r') ++at;
    }
    for (; at < b.size() && b[at] >= '0' && b[at] <= '9'; ++at) {
      if (value > 100'000'000)
        throw DataError(where + ": PNM header number at byte " + std::to_string(at) + " is too large");
      value = value * 10 + (b[at] - '0');
    }
  }
  if (number[2] > 255)
    throw DataError(where + ": 16-bit PNM images (maxval above 255) are not supported; convert it to 8 bits or PNG");
}

}  // namespace

DecodedImage decode_image(std::span<const std::uint8_t> bytes, int channels, const std::string& where) {
  if (bytes.size() > static_cast<std::size_t>(INT_MAX))
    throw LimitError(where + ": " + std::to_string(bytes.size()) + " bytes is too large for an image file");
  if (bytes.empty()) throw DataError(where + ": cannot decode image (the file is empty)");
  const auto* data = bytes.data();
  const int size = static_cast<int>(bytes.size());
  DecodedImage image;
  check_jpeg_huffman_tables(bytes, where);
  check_png_chunks(bytes, where);
  check_pnm_header(bytes, where);
  auto [width, height] = declared_size(bytes);
  if (width == 0 && height == 0 && stbi_info_from_memory(data, size, &image.width, &image.height, &image.stored_channels)) {
    width = image.width;
    height = image.height;
  }
  const std::int64_t cap = limits().max_image_pixels;
  if (width > cap || height > cap || width * height > cap) {
    throw LimitError(where + ": the header declares a " + std::to_string(width) + "x" + std::to_string(height) +
                     " image, above the limit of " + std::to_string(cap) + " pixels (Limits::max_image_pixels)");
  }
  std::unique_ptr<stbi_uc, void (*)(void*)> decoded(
      stbi_load_from_memory(data, size, &image.width, &image.height, &image.stored_channels, channels),
      stbi_image_free);
  if (!decoded) throw DataError(where + ": cannot decode image (" + stbi_failure_reason() + ")");
  // stb accepts some headers without a size (a PNM file cut after its magic) as a 0 x 0 image.
  if (image.width <= 0 || image.height <= 0) {
    throw DataError(where + ": the image is empty (" + std::to_string(image.width) + "x" +
                    std::to_string(image.height) + ")");
  }
  // stb may decode formats whose header stbi_info cannot read; the decoded size is checked as well.
  image.channels = channels == 0 ? image.stored_channels : channels;
  const std::int64_t values = checked_numel(
      std::vector<std::int64_t>{image.height, image.width, image.channels}, 1, where + ": decoded image");
  image.pixels.assign(decoded.get(), decoded.get() + values);
  return image;
}

DecodedImage decode_image_file(const std::string& path, int channels) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw FileError(path + ": no such file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw FileError(path + ": cannot read the file size");
  if (size > static_cast<std::uintmax_t>(INT_MAX))
    throw LimitError(path + ": " + std::to_string(size) + " bytes is too large for an image file");
  std::ifstream in(path, std::ios::binary);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (!in) throw FileError(path + ": cannot read the file");
  return decode_image(bytes, channels, path);
}

std::vector<float> load_image(const std::string& path, const ImageLayout& layout) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw FileError(path + ": no such file");
  std::ifstream in(path, std::ios::binary);
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw FileError(path + ": cannot read the file");
  return image_to_layout(bytes, layout, path);
}

std::vector<float> image_to_layout(std::span<const std::uint8_t> bytes, const ImageLayout& layout,
                                   const std::string& path) {
  if (layout.channels != 1 && layout.channels != 3) {
    throw DataError(path + ": the net wants " + std::to_string(layout.channels) +
                    "-channel input; images can feed 1 (grayscale) or 3 (colour) channels");
  }
  if (layout.height <= 0 || layout.width <= 0) {
    throw DataError(path + ": invalid target size " + std::to_string(layout.height) + "x" +
                    std::to_string(layout.width));
  }
  // stb converts to the requested channel count (luminance for grayscale).
  DecodedImage image = decode_image(bytes, layout.channels, path);
  const int width = image.width, height = image.height;
  std::vector<std::uint8_t> pixels = std::move(image.pixels);
  const int channels = layout.channels;
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
