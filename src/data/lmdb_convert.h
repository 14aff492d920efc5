// Building Caffe LMDBs of Datum records (keys "00000000", "00000001", ...) from IDX files, CIFAR-10
// batches or a folder of images with one sub-folder per class.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace espresso::data {

struct LmdbConversion {
  std::string format;           // "idx" (MNIST layout), "cifar10" or "folder"
  std::string input;            // a folder
  std::string output;           // the LMDB folder to create
  std::string split = "train";  // idx, cifar10
  std::string resize;           // folder: "HxW", empty to keep each image's size
  bool gray = false;            // folder: one gray channel instead of BGR
  bool shuffle = false;
  unsigned seed = 1;
};

struct LmdbSummary {
  std::int64_t records = 0;
  int channels = 0;  // of the first record
  int height = 0;
  int width = 0;
  std::vector<std::string> class_names;  // folder: sorted sub-folder names, also written to labels.txt
};

// Converts and writes the LMDB; throws FileError, DataError naming the file that cannot be used.
LmdbSummary convert_to_lmdb(const LmdbConversion& conversion);

}  // namespace espresso::data
