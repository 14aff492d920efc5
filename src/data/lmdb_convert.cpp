#include "espresso/data.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>

#include "data/cifar.h"
#include "data/datum.h"
#include "data/image_decode.h"
#include "data/lmdb.h"
#include "espresso/errors.h"

namespace espresso::data {
namespace {

namespace fs = std::filesystem;

// One labelled image as planar bytes.
struct Record {
  int channels = 0;
  int height = 0;
  int width = 0;
  std::vector<std::uint8_t> pixels;
  int label = 0;
};

std::pair<int, int> parse_size(const std::string& text) {
  int height = 0, width = 0;
  char x = 0;
  if (std::sscanf(text.c_str(), "%d%c%d", &height, &x, &width) != 3 || (x != 'x' && x != 'X') ||
      height <= 0 || width <= 0) {
    throw DataError("--resize '" + text + "': expected HEIGHTxWIDTH, e.g. 32x32");
  }
  return {height, width};
}

// Decodes an image file to planar bytes: BGR as Caffe's convert_imageset, or gray.
Record read_image_file(const fs::path& path, bool gray, const std::string& resize) {
  const int channels = gray ? 1 : 3;
  DecodedImage image = decode_image_file(path.string(), channels);
  int width = image.width, height = image.height;
  std::vector<std::uint8_t> interleaved = std::move(image.pixels);
  if (!resize.empty()) {
    const auto [new_height, new_width] = parse_size(resize);
    interleaved = resize_image(interleaved, height, width, channels, new_height, new_width);
    height = new_height;
    width = new_width;
  }
  Record record{channels, height, width, {}, 0};
  const std::size_t plane = std::size_t(height) * width;
  record.pixels.resize(plane * channels);
  for (std::size_t i = 0; i < plane; ++i) {
    for (int c = 0; c < channels; ++c)
      record.pixels[c * plane + i] = interleaved[i * channels + (channels == 3 ? 2 - c : 0)];
  }
  return record;
}

// Class folders in sorted order; their names go to labels.txt in the output.
std::vector<Record> read_folder(const LmdbConversion& o, std::vector<std::string>& class_names) {
  std::vector<fs::path> classes;
  for (const fs::directory_entry& entry : fs::directory_iterator(o.input)) {
    if (entry.is_directory()) classes.push_back(entry.path());
  }
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) throw DataError(o.input + ": no class sub-folders");
  std::vector<Record> records;
  for (std::size_t label = 0; label < classes.size(); ++label) {
    class_names.push_back(classes[label].filename().string());
    std::vector<fs::path> files;
    for (const fs::directory_entry& entry : fs::directory_iterator(classes[label])) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) {
      Record record = read_image_file(file, o.gray, o.resize);
      record.label = static_cast<int>(label);
      records.push_back(std::move(record));
    }
  }
  return records;
}

std::vector<Record> from_labeled(const LabeledImages& images, const LmdbConversion& o) {
  if (o.gray && images.channels != 1) throw UnsupportedError("--gray applies to --format folder only");
  if (!o.resize.empty()) throw UnsupportedError("--resize applies to --format folder only");
  std::vector<Record> records(static_cast<std::size_t>(images.count));
  for (std::int64_t i = 0; i < images.count; ++i) {
    Record& r = records[static_cast<std::size_t>(i)];
    r.channels = static_cast<int>(images.channels);
    r.height = static_cast<int>(images.height);
    r.width = static_cast<int>(images.width);
    r.pixels.assign(images.image(i), images.image(i) + images.image_size());
    r.label = images.labels[static_cast<std::size_t>(i)];
  }
  return records;
}

}  // namespace

LmdbSummary convert_text_to_lmdb(const LmdbConversion& o);

LmdbSummary convert_to_lmdb(const LmdbConversion& o) {
  if (o.format == "text") return convert_text_to_lmdb(o);
  const Split split = parse_split(o.split);
  std::vector<std::string> class_names;
  std::vector<Record> records;
  if (o.format == "idx") {
    records = from_labeled(load_mnist(o.input, split), o);
  } else if (o.format == "cifar10") {
    records = from_labeled(load_cifar10(o.input, split), o);
  } else if (o.format == "folder") {
    if (!fs::is_directory(o.input)) throw FileError(o.input + ": no such folder");
    records = read_folder(o, class_names);
  } else {
    throw DataError("convert-data: format '" + o.format + "' is unknown (known: idx, cifar10, folder, text)");
  }
  if (records.empty()) throw DataError(o.input + ": no images to convert");
  std::vector<std::size_t> order(records.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  if (o.shuffle) {
    std::mt19937_64 rng(o.seed);
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  }
  LmdbWriter writer(o.output);
  char key[24];
  for (std::size_t i = 0; i < order.size(); ++i) {
    const Record& r = records[order[i]];
    std::snprintf(key, sizeof key, "%08zu", i);
    writer.put(key, encode_datum(r.pixels.data(), r.channels, r.height, r.width, r.label));
  }
  writer.finish();
  if (!class_names.empty()) {
    std::ofstream labels(fs::path(o.output) / "labels.txt");
    for (const std::string& name : class_names) labels << name << '\n';
    if (!labels) throw FileError(o.output + "/labels.txt: cannot write");
  }
  const Record& first = records.front();
  return {static_cast<std::int64_t>(records.size()), first.channels, first.height, first.width, class_names};
}

}  // namespace espresso::data
