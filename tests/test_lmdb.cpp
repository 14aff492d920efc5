// LMDB records, Datum decoding, Caffe's transforms and the prefetching data source.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "data/datum.h"
#include "data/lmdb.h"
#include "espresso/errors.h"
#include "import/caffe/caffe.pb.h"
#include "test_support.h"
#include "train/data_source.h"

namespace espresso::train {
namespace {

using testing::TempDir;

// Records i = 0..count-1 of 1x4x5 bytes valued i*10 + position, label i % 3.
std::string write_lmdb(const TempDir& dir, int count) {
  const std::string path = dir.file("db");
  data::LmdbWriter writer(path);
  for (int i = 0; i < count; ++i) {
    std::vector<std::uint8_t> pixels(20);
    for (int p = 0; p < 20; ++p) pixels[static_cast<std::size_t>(p)] = static_cast<std::uint8_t>(i * 10 + p);
    char key[16];
    std::snprintf(key, sizeof key, "%08d", i);
    writer.put(key, data::encode_datum(pixels.data(), 1, 4, 5, i % 3));
  }
  writer.finish();
  return path;
}

std::string identity(const std::string& path) { return path; }

TEST(Lmdb, ReadsRecordsInKeyOrderAndSeeks) {
  TempDir dir;
  data::LmdbReader reader(write_lmdb(dir, 7));
  EXPECT_EQ(reader.size(), 7);
  data::Sample sample;
  for (std::int64_t i : {0, 1, 2, 6, 3, 0}) {
    data::decode_datum(reader.value_at(i), sample, "test");
    EXPECT_EQ(sample.label, i % 3);
    EXPECT_EQ(sample.values[0], static_cast<float>(i * 10));
    EXPECT_EQ(reader.key(), std::string("0000000") + std::to_string(i));
  }
  EXPECT_THROW(reader.value_at(7), DataError);
}

TEST(Lmdb, MissingAndCorruptDatabasesNameThePath) {
  TempDir dir;
  EXPECT_THROW(data::LmdbReader(dir.file("none")), FileError);
  std::filesystem::create_directories(dir.file("bad"));
  dir.write("bad/data.mdb", std::string(10000, '\x5a'));
  try {
    data::LmdbReader reader(dir.file("bad"));
    FAIL() << "opened a corrupt database";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("bad")), std::string::npos) << e.what();
  }
  data::Sample sample;
  EXPECT_THROW(data::decode_datum("\xff\xff\xff", sample, "record 3"), DataError);
}

TEST(Transform, CropMirrorMeanAndScale) {
  data::Sample s;
  s.channels = 1;
  s.height = 4;
  s.width = 5;
  for (int i = 0; i < 20; ++i) s.values.push_back(static_cast<float>(i));
  std::mt19937_64 rng(1);

  Transform test;
  test.crop = 2;
  test.scale = 0.5f;
  test.mean_values = {1.0f};
  std::vector<float> out(4);
  test.apply(s, rng, out.data());
  // Centre window of a 4x5 image: rows 1-2, columns 1-2 ((5-2)/2 = 1).
  EXPECT_EQ(out, (std::vector<float>{(6 - 1) * 0.5f, (7 - 1) * 0.5f, (11 - 1) * 0.5f, (12 - 1) * 0.5f}));

  // TRAIN: every window start and both flips occur, each window is a true crop of the image.
  Transform train = test;
  train.phase = Phase::train;
  train.mirror = true;
  train.mean_values.clear();
  train.scale = 1.0f;
  bool flipped = false, straight = false;
  for (int trial = 0; trial < 200; ++trial) {
    train.apply(s, rng, out.data());
    const float top_left = std::min(out[0], out[1]);
    const int row = static_cast<int>(top_left) / 5;
    const int col = static_cast<int>(top_left) % 5;
    ASSERT_LE(row, 2);
    ASSERT_LE(col, 3);
    EXPECT_EQ(std::min(out[2], out[3]), top_left + 5);
    (out[0] > out[1] ? flipped : straight) = true;
  }
  EXPECT_TRUE(flipped && straight);

  // A per-pixel mean is indexed at the uncropped position.
  Transform mean_image;
  mean_image.mean_image.assign(20, 0.0f);
  mean_image.mean_image[19] = 19.0f;
  std::vector<float> whole(20);
  mean_image.apply(s, rng, whole.data());
  EXPECT_EQ(whole[19], 0.0f);
  EXPECT_EQ(whole[18], 18.0f);
}

TEST(DataSource, BatchesDependOnlyOnTheirIndex) {
  TempDir dir;
  const std::string path = write_lmdb(dir, 7);
  Transform transform;
  transform.phase = Phase::train;
  transform.crop = 3;
  transform.mirror = true;
  DataSource source("test", open_records(path, "lmdb", Phase::train, false, 5, identity), transform, 3, 5);
  EXPECT_EQ(source.data_shape(), (Shape{3, 1, 3, 3}));
  std::vector<Batch> batches;
  for (int i = 0; i < 5; ++i) batches.push_back(source.next());
  // Records wrap around: batch 2 holds records 6, 0, 1.
  EXPECT_EQ(batches[2].labels.to_vector(), (std::vector<float>{0.0f, 0.0f, 1.0f}));
  source.seek(3);
  EXPECT_EQ(source.next().data.to_vector(), batches[3].data.to_vector());
  source.seek(0);
  EXPECT_EQ(source.next().data.to_vector(), batches[0].data.to_vector());
}

TEST(DataSource, DataLayersBecomeGraphInputs) {
  TempDir dir;
  const std::string path = write_lmdb(dir, 7);
  Graph graph;
  LayerSpec data;
  data.name = "source";
  data.type = "Data";
  data.outputs = {"data", "label"};
  data.attrs.set("source", path);
  data.attrs.set("batch_size", std::int64_t{2});
  data.attrs.set("backend", std::string("lmdb"));
  data.attrs.set("scale", 0.5);
  graph.layers.push_back(data);
  LayerSpec relu;
  relu.name = "relu";
  relu.type = "ReLU";
  relu.inputs = {"data"};
  relu.outputs = {"out"};
  graph.layers.push_back(relu);
  std::vector<DataFeed> feeds = attach_data_sources(graph, Phase::test, 1, identity);
  ASSERT_EQ(feeds.size(), 1u);
  ASSERT_EQ(graph.layers.size(), 1u);
  ASSERT_EQ(graph.inputs.size(), 2u);
  EXPECT_EQ(graph.inputs[0].shape, (Shape{2, 1, 4, 5}));
  EXPECT_EQ(graph.inputs[1].shape, (Shape{2}));
  const Batch batch = feeds[0].source->next();
  EXPECT_EQ(batch.data.to_vector()[21], 0.5f * 11.0f);

  Graph missing = graph;
  missing.layers.insert(missing.layers.begin(), data);
  missing.layers[0].attrs.set("source", dir.file("nowhere"));
  missing.inputs.clear();
  EXPECT_THROW(attach_data_sources(missing, Phase::test, 1, identity), FileError);
  missing.layers[0].type = "HDF5Data";
  EXPECT_THROW(attach_data_sources(missing, Phase::test, 1, identity), UnsupportedError);
}

TEST(DataSource, ReadsACaffeMeanFile) {
  TempDir dir;
  caffe::BlobProto blob;
  blob.set_num(1);
  blob.set_channels(1);
  blob.set_height(2);
  blob.set_width(2);
  for (float v : {1.0f, 2.0f, 3.0f, 4.0f}) blob.add_data(v);
  Shape shape;
  const std::vector<float> mean =
      read_mean_file(dir.write("mean.binaryproto", blob.SerializeAsString()), shape);
  EXPECT_EQ(shape, (Shape{1, 2, 2}));
  EXPECT_EQ(mean, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_THROW(read_mean_file(dir.write("bad.binaryproto", "\xff\xff"), shape), DataError);
}

}  // namespace
}  // namespace espresso::train
