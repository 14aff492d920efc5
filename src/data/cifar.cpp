#include "data/cifar.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "espresso/errors.h"

namespace espresso::data {

namespace {

constexpr std::int64_t kSide = 32;
constexpr std::int64_t kChannels = 3;
constexpr std::int64_t kImageBytes = kChannels * kSide * kSide;
constexpr std::int64_t kRecordBytes = 1 + kImageBytes;
constexpr int kClasses = 10;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path + ": cannot open");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw FileError(path + ": read error");
  return bytes;
}

std::vector<std::string> matching_files(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> paths;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(ec) && name.starts_with(prefix) && name.ends_with(".bin")) {
      paths.push_back(entry.path().string());
    }
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace

void append_cifar10_batch(const std::string& bytes, const std::string& path, LabeledImages& set) {
  set.channels = kChannels;
  set.height = kSide;
  set.width = kSide;
  {
    const auto size = static_cast<std::int64_t>(bytes.size());
    if (size == 0 || size % kRecordBytes != 0) {
      throw DataError(path + ": size " + std::to_string(size) + " is not a whole number of " +
                      std::to_string(kRecordBytes) + "-byte CIFAR-10 records");
    }
    const std::int64_t records = size / kRecordBytes;
    set.pixels.reserve(set.pixels.size() + static_cast<std::size_t>(records * kImageBytes));
    for (std::int64_t r = 0; r < records; ++r) {
      const auto* record = reinterpret_cast<const std::uint8_t*>(bytes.data()) + r * kRecordBytes;
      if (record[0] >= kClasses) {
        throw DataError(path + ": record " + std::to_string(r) + " has label " + std::to_string(record[0]) +
                        ", not in [0, " + std::to_string(kClasses) + ")");
      }
      set.labels.push_back(record[0]);
      set.pixels.insert(set.pixels.end(), record + 1, record + kRecordBytes);
    }
    set.count += records;
    if (!set.description.empty()) set.description += ", ";
    set.description += path;
  }
}

LabeledImages read_cifar10_batches(const std::vector<std::string>& paths) {
  LabeledImages set;
  set.channels = kChannels;
  set.height = kSide;
  set.width = kSide;
  for (const std::string& path : paths) append_cifar10_batch(read_file(path), path, set);
  return set;
}

LabeledImages load_cifar10(const std::string& dir, Split split) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw DataError(dir + ": not a directory");
  std::vector<std::string> paths;
  if (split == Split::test) {
    const std::filesystem::path full = std::filesystem::path(dir) / "test_batch.bin";
    paths = std::filesystem::is_regular_file(full, ec) ? std::vector<std::string>{full.string()}
                                                       : matching_files(dir, "test_batch");
  } else {
    paths = matching_files(dir, "data_batch_");
  }
  if (paths.empty()) {
    throw DataError(
        dir + (split == Split::test ? ": no test_batch.bin or test_batch*.bin" : ": no data_batch_*.bin") +
        " (expected the CIFAR-10 binary layout)");
  }
  return read_cifar10_batches(paths);
}

}  // namespace espresso::data
