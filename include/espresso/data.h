// Datasets, images and preprocessing: what the tools and an embedding app use to feed models and to
// build training data (Caffe LMDBs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace espresso::data {

// Labelled image datasets held in memory as 8-bit planar images (N x C x H x W).
enum class Split { train, test };

// "train" or "test"; throws DataError otherwise.
Split parse_split(const std::string& text);
const char* split_name(Split split);

struct LabeledImages {
  std::int64_t count = 0;
  std::int64_t channels = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;
  std::vector<std::uint8_t> pixels;  // count x channels x height x width
  std::vector<std::uint8_t> labels;  // one per image
  std::string description;           // where the images came from, for messages

  std::int64_t image_size() const { return channels * height * width; }
  const std::uint8_t* image(std::int64_t index) const {
    return pixels.data() + static_cast<std::size_t>(index * image_size());
  }
};

enum class DatasetKind { mnist, fashion_mnist, cifar10 };

// "mnist", "fashion-mnist" or "cifar10"; throws DataError listing the known names otherwise.
DatasetKind parse_dataset_kind(const std::string& text);

// Reads one split of a dataset from its usual on-disk layout in `dir`; throws DataError or
// FileError naming the file and the problem.
LabeledImages load_dataset(DatasetKind kind, const std::string& dir, Split split);

// IDX files (the MNIST format), raw or gzip-compressed.
struct IdxImages {
  std::int64_t count = 0;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<std::uint8_t> pixels;  // count x rows x cols
};

// An unsigned-byte image file (magic 2051, three dimensions). Throws DataError naming the file
// when the magic, dimensions or size are wrong, FileError when it cannot be read.
IdxImages read_idx_images(const std::string& path);
// An unsigned-byte label file (magic 2049, one dimension).
std::vector<std::uint8_t> read_idx_labels(const std::string& path);

// The MNIST / Fashion-MNIST layout: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in `dir`.
// Checks that the image and label counts agree.
LabeledImages load_mnist(const std::string& dir, Split split);

// Image files (JPEG, PNG, BMP, ... through stb_image) decoded to planar float values.
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

// Input preprocessing as Caffe's transform_param does it: (pixel - mean[c]) * scale.
struct Preprocess {
  std::vector<float> mean;  // one per channel; empty for none
  float scale = 1.0f;

  // Writes `count` planar images of `channels` x `plane` values, normalised, to `out`.
  template <class T>
  void apply(const T* pixels, std::int64_t count, std::int64_t channels, std::int64_t plane,
             float* out) const {
    for (std::int64_t n = 0; n < count; ++n) {
      for (std::int64_t c = 0; c < channels; ++c) {
        const float m = mean.empty() ? 0.0f : mean[static_cast<std::size_t>(c)];
        const std::int64_t offset = (n * channels + c) * plane;
        for (std::int64_t i = 0; i < plane; ++i) {
          out[offset + i] = (static_cast<float>(pixels[offset + i]) - m) * scale;
        }
      }
    }
  }
};

// `text` is either comma-separated values (one per channel, or one for all channels) or the path
// of a .npy file shaped (C,) or (C, H, W), whose per-channel average is used. Throws DataError
// when the values do not match `channels`.
std::vector<float> parse_mean(const std::string& text, int channels);

// Building Caffe LMDBs of Datum records (keys "00000000", "00000001", ...) from IDX files, CIFAR-10
// batches or a folder of images with one sub-folder per class.
struct LmdbConversion {
  std::string format;           // "idx" (MNIST layout), "cifar10" or "folder"
  std::string input;            // a folder
  std::string output;           // the LMDB folder to create
  std::string split = "train";  // idx, cifar10
  std::string resize;           // folder: "HxW", empty to keep each image's size
  bool gray = false;            // folder: one gray channel instead of BGR
  bool shuffle = false;
  unsigned seed = 1;
  // text: characters per record (padded with 0, cut beyond), the largest vocabulary (the most frequent
  // characters; others become 1), and an LMDB made before whose vocabulary and labels to reuse (the
  // test split of a training set).
  std::int64_t length = 100;
  std::int64_t max_vocabulary = 256;
  std::string like;
};

struct LmdbSummary {
  std::int64_t records = 0;
  int channels = 0;  // of the first record
  int height = 0;
  int width = 0;
  std::vector<std::string> class_names;  // folder: sorted sub-folder names, also written to labels.txt
};

// Converts and writes the LMDB; throws FileError, DataError naming the file that cannot be used.
// Format "text": INPUT is a TSV file of `label<TAB>text` lines or a folder with one sub-folder of UTF-8
// text files per class (a file is a record); each record holds its first `length` characters as
// vocabulary indices (float_data, 1 x 1 x length), and the output folder gets vocab.txt and labels.txt.
LmdbSummary convert_to_lmdb(const LmdbConversion& conversion);

// A character vocabulary for text models: index 0 pads, 1 stands for characters outside it, and
// 2, 3, ... are the characters (Unicode code points) in the order of vocab.txt, one `U+XXXX` a line.
class CharVocabulary {
 public:
  // The `max_size` − 2 most frequent characters of `texts` (ties by code point).
  static CharVocabulary build(const std::vector<std::string>& texts, std::int64_t max_size);
  // Throws FileError, DataError naming the file and line.
  static CharVocabulary load(const std::string& path);
  void save(const std::string& path) const;
  // The first `length` characters of UTF-8 `text` as indices, padded with 0; throws DataError for
  // bytes that are not UTF-8.
  std::vector<float> encode(const std::string& text, std::int64_t length) const;
  std::int64_t size() const { return static_cast<std::int64_t>(chars_.size()) + 2; }

 private:
  std::vector<char32_t> chars_;
};

// The code points of UTF-8 `text`; throws DataError naming the byte offset of malformed input.
std::vector<char32_t> decode_utf8(const std::string& text);

}  // namespace espresso::data
