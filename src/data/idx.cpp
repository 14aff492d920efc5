#include "espresso/data.h"

#include <zlib.h>

#include <filesystem>
#include <memory>

#include "data/idx.h"
#include "espresso/errors.h"
#include "espresso/limits.h"

namespace espresso::data {

namespace {

constexpr std::uint32_t kImageMagic = 2051;
constexpr std::uint32_t kLabelMagic = 2049;
// Far above any real IDX file; guards the allocation against corrupt headers.
constexpr std::int64_t kMaxBytes = std::int64_t{1} << 34;

// gzread reads uncompressed files as they are, so one path serves raw and .gz files.
std::string read_maybe_gzipped(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw FileError(path + ": no such file");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(path.c_str(), "rb"), gzclose);
  if (!file) throw FileError(path + ": cannot open");
  std::string bytes;
  std::vector<char> chunk(1 << 20);
  for (;;) {
    const int n = gzread(file.get(), chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int code = 0;
      const char* message = gzerror(file.get(), &code);
      throw DataError(path + ": cannot decompress (" + std::string(message) + ")");
    }
    if (n == 0) break;
    bytes.append(chunk.data(), static_cast<std::size_t>(n));
    if (static_cast<std::int64_t>(bytes.size()) > kMaxBytes) throw DataError(path + ": file is too large");
  }
  // A .gz cut short reads without error up to the cut; zlib reports it only through gzerror.
  int code = 0;
  gzerror(file.get(), &code);
  if (code == Z_BUF_ERROR) throw DataError(path + ": compressed data is truncated");
  if (code != Z_OK) throw DataError(path + ": cannot decompress (corrupt data)");
  return bytes;
}

std::uint32_t big_endian_u32(const std::string& bytes, std::size_t offset) {
  std::uint32_t value = 0;
  for (std::size_t i = 0; i < 4; ++i) value = (value << 8) | static_cast<std::uint8_t>(bytes[offset + i]);
  return value;
}

// Checks the magic and returns the dimensions.
std::vector<std::int64_t> read_header(const std::string& path, const std::string& bytes, std::uint32_t magic,
                                      const char* kind) {
  const std::size_t rank = magic & 0xff;
  const std::size_t header_bytes = 4 + 4 * rank;
  if (bytes.size() < 4) throw DataError(path + ": file is too short for an IDX header");
  const std::uint32_t found = big_endian_u32(bytes, 0);
  if (found != magic) {
    throw DataError(path + ": magic number " + std::to_string(found) + " is not " + std::to_string(magic) +
                    " (IDX " + kind + " file)");
  }
  if (bytes.size() < header_bytes) throw DataError(path + ": file is too short for an IDX header");
  std::vector<std::int64_t> dims;
  std::int64_t expected = 1;
  for (std::size_t i = 0; i < rank; ++i) {
    const std::int64_t dim = big_endian_u32(bytes, 4 + 4 * i);
    if (dim == 0 && i > 0) throw DataError(path + ": dimension " + std::to_string(i) + " is 0");
    dims.push_back(dim);
  }
  expected = checked_numel(dims, 1, path + ": IDX header");
  const auto actual = static_cast<std::int64_t>(bytes.size() - header_bytes);
  if (actual != expected) {
    std::string shape;
    for (std::int64_t d : dims) {
      if (!shape.empty()) shape += 'x';
      shape += std::to_string(d);
    }
    throw DataError(path + ": header says " + shape + " (" + std::to_string(expected) +
                    " bytes of data) but " + std::to_string(actual) + " bytes follow" +
                    (actual < expected ? " (file is truncated)" : ""));
  }
  return dims;
}

// Prefers the uncompressed file when both exist.
std::string find_idx_file(const std::string& dir, const std::string& stem) {
  const std::filesystem::path base(dir);
  std::error_code ec;
  for (const std::string& name : {stem, stem + ".gz"}) {
    if (std::filesystem::is_regular_file(base / name, ec)) return (base / name).string();
  }
  throw DataError(dir + ": no " + stem + " or " + stem + ".gz (expected the MNIST file layout)");
}

}  // namespace

IdxImages parse_idx_images(const std::string& bytes, const std::string& path) {
  const std::vector<std::int64_t> dims = read_header(path, bytes, kImageMagic, "image");
  IdxImages images{dims[0], dims[1], dims[2], {}};
  images.pixels.assign(bytes.begin() + 16, bytes.end());
  return images;
}

std::vector<std::uint8_t> parse_idx_labels(const std::string& bytes, const std::string& path) {
  read_header(path, bytes, kLabelMagic, "label");
  return {bytes.begin() + 8, bytes.end()};
}

IdxImages read_idx_images(const std::string& path) { return parse_idx_images(read_maybe_gzipped(path), path); }

std::vector<std::uint8_t> read_idx_labels(const std::string& path) {
  return parse_idx_labels(read_maybe_gzipped(path), path);
}

LabeledImages load_mnist(const std::string& dir, Split split) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw DataError(dir + ": not a directory");
  const std::string prefix = split == Split::train ? "train" : "t10k";
  const std::string images_path = find_idx_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_idx_file(dir, prefix + "-labels-idx1-ubyte");
  IdxImages images = read_idx_images(images_path);
  std::vector<std::uint8_t> labels = read_idx_labels(labels_path);
  if (static_cast<std::int64_t>(labels.size()) != images.count) {
    throw DataError(labels_path + " has " + std::to_string(labels.size()) + " labels but " + images_path +
                    " has " + std::to_string(images.count) + " images");
  }
  LabeledImages set;
  set.count = images.count;
  set.channels = 1;
  set.height = images.rows;
  set.width = images.cols;
  set.pixels = std::move(images.pixels);
  set.labels = std::move(labels);
  set.description = images_path;
  return set;
}

}  // namespace espresso::data
