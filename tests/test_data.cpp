// Data readers: IDX (raw and gzip), the MNIST and CIFAR-10 layouts, images, .npy means.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/cifar.h"
#include "espresso/data.h"
#include "data/npy.h"
#include "espresso/errors.h"
#include "test_support.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

namespace espresso {
namespace {

namespace fs = std::filesystem;

std::string data_dir() { return testing::shared_data_dir().string(); }

using testing::TempDir;

// Suites that read the shared MNIST, CIFAR, ImageNet-mean and image files.
class DataIdx : public testing::SharedDataTest {};
class DataCifar : public testing::SharedDataTest {};
class DataMean : public testing::SharedDataTest {};
class DataImage : public testing::SharedDataTest {};

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string big_endian(std::uint32_t value) {
  return {static_cast<char>(value >> 24), static_cast<char>(value >> 16), static_cast<char>(value >> 8),
          static_cast<char>(value)};
}

std::string idx_images(std::uint32_t count, std::uint32_t rows, std::uint32_t cols, std::size_t data_bytes) {
  return big_endian(2051) + big_endian(count) + big_endian(rows) + big_endian(cols) +
         std::string(data_bytes, '\x7f');
}

std::string idx_labels(std::uint32_t count, std::size_t data_bytes) {
  return big_endian(2049) + big_endian(count) + std::string(data_bytes, '\x01');
}

void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(file);
}

// Runs `body`, expecting a DataError whose message contains every one of `parts`.
template <class Body>
void expect_data_error(Body body, const std::vector<std::string>& parts) {
  try {
    body();
    ADD_FAILURE() << "expected a DataError";
  } catch (const DataError& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST_F(DataIdx, ReadsSharedMnistTestSplit) {
  const data::LabeledImages set = data::load_mnist(data_dir() + "/mnist", data::Split::test);
  EXPECT_EQ(set.count, 10000);
  EXPECT_EQ(set.channels, 1);
  EXPECT_EQ(set.height, 28);
  EXPECT_EQ(set.width, 28);
  ASSERT_EQ(set.labels.size(), 10000u);
  ASSERT_EQ(set.pixels.size(), 10000u * 28 * 28);
  EXPECT_EQ(set.labels[0], 7);
  EXPECT_EQ(set.labels[1], 2);
  EXPECT_EQ(set.labels[2], 1);
  // Digits are white strokes on a black border.
  EXPECT_EQ(set.image(0)[0], 0);
}

TEST_F(DataIdx, ReadsSharedMnistTrainSplit) {
  const data::LabeledImages set = data::load_mnist(data_dir() + "/mnist", data::Split::train);
  EXPECT_EQ(set.count, 60000);
  EXPECT_EQ(set.labels[0], 5);
  EXPECT_EQ(set.labels[1], 0);
}

TEST_F(DataIdx, RawAndGzipFilesReadTheSame) {
  TempDir dir;
  const std::string bytes = idx_images(2, 3, 4, 24);
  write_file(dir.file("raw-idx3"), bytes);
  write_gzip(dir.file("packed-idx3.gz"), bytes);
  const data::IdxImages raw = data::read_idx_images(dir.file("raw-idx3"));
  const data::IdxImages packed = data::read_idx_images(dir.file("packed-idx3.gz"));
  EXPECT_EQ(raw.count, 2);
  EXPECT_EQ(raw.rows, 3);
  EXPECT_EQ(raw.cols, 4);
  EXPECT_EQ(raw.pixels, packed.pixels);
  EXPECT_EQ(raw.pixels.size(), 24u);
}

TEST_F(DataIdx, TruncatedFilesAreDataErrors) {
  TempDir dir;
  write_file(dir.file("short-images"), idx_images(10, 28, 28, 100));
  expect_data_error([&] { data::read_idx_images(dir.file("short-images")); }, {"short-images", "truncated"});
  write_file(dir.file("long-labels"), idx_labels(3, 5));
  expect_data_error([&] { data::read_idx_labels(dir.file("long-labels")); },
                    {"long-labels", "5 bytes follow"});
  write_file(dir.file("header-only"), big_endian(2051) + big_endian(1));
  expect_data_error([&] { data::read_idx_images(dir.file("header-only")); }, {"header-only", "too short"});

  // A real gzip stream cut in half.
  const std::string packed = read_file(data_dir() + "/mnist/t10k-labels-idx1-ubyte.gz");
  ASSERT_GT(packed.size(), 100u);
  write_file(dir.file("cut-labels.gz"), packed.substr(0, packed.size() / 2));
  expect_data_error([&] { data::read_idx_labels(dir.file("cut-labels.gz")); },
                    {"cut-labels.gz", "truncated"});
}

TEST_F(DataIdx, WrongMagicIsADataError) {
  TempDir dir;
  write_file(dir.file("labels-as-images"), idx_labels(4, 4));
  expect_data_error([&] { data::read_idx_images(dir.file("labels-as-images")); },
                    {"labels-as-images", "magic number 2049", "2051"});
  write_file(dir.file("images-as-labels"), idx_images(1, 2, 2, 4));
  expect_data_error([&] { data::read_idx_labels(dir.file("images-as-labels")); },
                    {"images-as-labels", "2049"});
}

TEST_F(DataIdx, MissingFileIsAFileError) {
  EXPECT_THROW(data::read_idx_images("/nonexistent/espresso/t10k-images-idx3-ubyte"), FileError);
}

TEST(DataMnist, CountsMustAgreeAndFilesMustExist) {
  TempDir dir;
  write_file(dir.file("t10k-images-idx3-ubyte"), idx_images(2, 2, 2, 8));
  expect_data_error([&] { data::load_mnist(dir.path(), data::Split::test); }, {"t10k-labels-idx1-ubyte"});
  write_gzip(dir.file("t10k-labels-idx1-ubyte.gz"), idx_labels(3, 3));
  expect_data_error([&] { data::load_mnist(dir.path(), data::Split::test); }, {"3 labels", "2 images"});
  expect_data_error([&] { data::load_mnist(dir.file("missing"), data::Split::test); }, {"not a directory"});
  expect_data_error([&] { data::load_mnist(dir.path(), data::Split::train); }, {"train-images-idx3-ubyte"});
}

TEST_F(DataCifar, ReadsSharedPartialBatches) {
  const std::string dir = data_dir() + "/cifar10";
  const data::LabeledImages train = data::load_cifar10(dir, data::Split::train);
  EXPECT_EQ(train.count, 4000);
  EXPECT_EQ(train.channels, 3);
  EXPECT_EQ(train.height, 32);
  EXPECT_EQ(train.width, 32);
  EXPECT_EQ(train.labels[0], 6);  // a frog
  const std::vector<int> red_row = {59, 43, 50, 68, 98, 119, 139, 145, 149, 149};
  for (std::size_t i = 0; i < red_row.size(); ++i) EXPECT_EQ(train.image(0)[i], red_row[i]) << i;

  const data::LabeledImages test = data::load_cifar10(dir, data::Split::test);
  EXPECT_EQ(test.count, 1000);
  EXPECT_EQ(test.labels[0], 3);  // a cat
  EXPECT_EQ(test.image(0)[0], 158);
  std::vector<int> counts(10, 0);
  for (std::uint8_t label : test.labels) ++counts[label];
  EXPECT_EQ(counts, (std::vector<int>{103, 89, 100, 103, 90, 86, 112, 102, 106, 109}));
}

TEST_F(DataCifar, BadFilesAreDataErrors) {
  TempDir dir;
  write_file(dir.file("test_batch.bin"), std::string(3073 + 5, '\x01'));
  expect_data_error([&] { data::load_cifar10(dir.path(), data::Split::test); },
                    {"test_batch.bin", "3073-byte"});
  write_file(dir.file("test_batch.bin"), '\x0c' + std::string(3072, '\x01'));
  expect_data_error([&] { data::load_cifar10(dir.path(), data::Split::test); },
                    {"test_batch.bin", "label 12"});
  expect_data_error([&] { data::load_cifar10(dir.path(), data::Split::train); }, {"data_batch_"});
}

TEST(DataDataset, ParsesNames) {
  EXPECT_EQ(data::parse_dataset_kind("fashion-mnist"), data::DatasetKind::fashion_mnist);
  EXPECT_EQ(data::parse_split("train"), data::Split::train);
  expect_data_error([] { data::parse_dataset_kind("imagenet"); }, {"imagenet", "cifar10"});
  expect_data_error([] { data::parse_split("val"); }, {"val"});
}

// A .npy file with the given header dictionary and raw data.
std::string npy(const std::string& dict, const std::string& payload, int version = 1) {
  std::string header = dict;
  const std::size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string bytes = std::string("\x93NUMPY", 6) + static_cast<char>(version) + '\0';
  const auto length = static_cast<std::uint32_t>(header.size());
  bytes += static_cast<char>(length & 0xff);
  bytes += static_cast<char>(length >> 8);
  if (version != 1) bytes += std::string(2, '\0');
  return bytes + header + payload;
}

template <class T>
std::string payload(const std::vector<T>& values) {
  return {reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T)};
}

TEST(DataNpy, ParsesFloat32AndFloat64) {
  const data::NpyArray a = data::parse_npy(
      npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", payload<float>({1, 2.5f, -3})),
      "a.npy");
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{3}));
  EXPECT_EQ(a.values, (std::vector<double>{1, 2.5, -3}));

  const data::NpyArray b = data::parse_npy(
      npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1, 2), }", payload<double>({1, 2, 3, 4}), 2),
      "b.npy");
  EXPECT_EQ(b.shape, (std::vector<std::int64_t>{2, 1, 2}));
  EXPECT_EQ(b.values, (std::vector<double>{1, 2, 3, 4}));
}

TEST(DataNpy, BadHeadersAreDataErrors) {
  const std::string floats = payload<float>({1, 2, 3});
  auto parse = [](const std::string& bytes) { return [bytes] { data::parse_npy(bytes, "m.npy"); }; };
  expect_data_error(parse("PK\x03\x04 not numpy"), {"m.npy", "magic"});
  expect_data_error(parse(npy("{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }", floats)),
                    {"'>f4'"});
  expect_data_error(parse(npy("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", floats)),
                    {"'<i4'"});
  expect_data_error(parse(npy("{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }", floats)),
                    {"fortran_order"});
  expect_data_error(parse(npy("{'descr': '<f4', 'fortran_order': False, }", floats)), {"'shape'"});
  expect_data_error(parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, x), }", floats)),
                    {"shape"});
  expect_data_error(parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", floats)),
                    {"12 bytes", "16"});
  expect_data_error(parse(npy("'descr': '<f4'", floats)), {"not a dictionary"});
  std::string cut = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", floats);
  expect_data_error(parse(cut.substr(0, 30)), {"truncated"});
  std::string future = cut;
  future[6] = 9;
  expect_data_error(parse(future), {"version 9"});
}

TEST_F(DataMean, CommaSeparatedValues) {
  EXPECT_EQ(data::parse_mean("104, 117,123", 3), (std::vector<float>{104, 117, 123}));
  EXPECT_EQ(data::parse_mean("0.5", 3), (std::vector<float>{0.5f, 0.5f, 0.5f}));
  expect_data_error([] { data::parse_mean("1,2", 3); }, {"2 values", "3 channels"});
  expect_data_error([] { data::parse_mean("1,abc,3", 3); }, {"'abc'"});
  expect_data_error([] { data::parse_mean("1,,3", 3); }, {"not a number"});
}

TEST_F(DataMean, NpyFilesGivePerChannelMeans) {
  TempDir dir;
  write_file(dir.file("mean.npy"), npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1, 2), }",
                                       payload<double>({1, 3, 10, 20})));
  EXPECT_EQ(data::parse_mean(dir.file("mean.npy"), 2), (std::vector<float>{2, 15}));
  expect_data_error([&] { data::parse_mean(dir.file("mean.npy"), 3); }, {"mean.npy", "(2, 1, 2)"});

  const std::vector<float> imagenet = data::parse_mean(data_dir() + "/imagenet/ilsvrc_2012_mean.npy", 3);
  ASSERT_EQ(imagenet.size(), 3u);
  EXPECT_NEAR(imagenet[0], 104.0, 0.1);
  EXPECT_NEAR(imagenet[1], 116.7, 0.1);
  EXPECT_NEAR(imagenet[2], 122.7, 0.1);
}

TEST(DataPreprocess, SubtractsThenScales) {
  data::Preprocess preprocess{{10.0f, 20.0f}, 0.5f};
  const std::vector<std::uint8_t> pixels = {10, 12, 20, 30};
  std::vector<float> out(4);
  preprocess.apply(pixels.data(), 1, 2, 2, out.data());
  EXPECT_EQ(out, (std::vector<float>{0.0f, 1.0f, 0.0f, 5.0f}));
}

TEST_F(DataImage, LoadsPlanarBgrOrRgbAndResizes) {
  TempDir dir;
  // 2x1 RGB: a pure red pixel, then a pure blue one.
  const std::vector<std::uint8_t> rgb = {255, 0, 0, 0, 0, 255};
  ASSERT_NE(stbi_write_png(dir.file("two.png").c_str(), 2, 1, 3, rgb.data(), 6), 0);

  const std::vector<float> bgr = data::load_image(dir.file("two.png"), {3, 1, 2, true});
  EXPECT_EQ(bgr, (std::vector<float>{0, 255, 0, 0, 255, 0}));
  const std::vector<float> plain = data::load_image(dir.file("two.png"), {3, 1, 2, false});
  EXPECT_EQ(plain, (std::vector<float>{255, 0, 0, 0, 0, 255}));

  const std::vector<float> gray = data::load_image(dir.file("two.png"), {1, 1, 2, true});
  ASSERT_EQ(gray.size(), 2u);
  EXPECT_GT(gray[0], gray[1]);  // red is brighter than blue

  const std::vector<float> big = data::load_image(data_dir() + "/images/cat.jpg", {3, 227, 200, true});
  EXPECT_EQ(big.size(), 3u * 227 * 200);
}

TEST_F(DataImage, UnreadableImagesAreErrors) {
  TempDir dir;
  write_file(dir.file("fake.jpg"), "this is not a JPEG");
  expect_data_error([&] { data::load_image(dir.file("fake.jpg"), {3, 8, 8, true}); }, {"fake.jpg", "decode"});
  expect_data_error([&] { data::load_image(dir.file("fake.jpg"), {4, 8, 8, true}); }, {"4-channel"});
  EXPECT_THROW(data::load_image(dir.file("missing.png"), {3, 8, 8, true}), FileError);
}

}  // namespace
}  // namespace espresso
