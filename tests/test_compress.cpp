// espresso compress: the building blocks against values worked out by hand, and a tiny run on Caffe's LeNet
// that checks the pruned weights stay zero through retraining, the shared values, and the size accounting
// against the written package's own manifest.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "espresso/compress.h"
#include "espresso/espresso.h"
#include "espresso/package.h"
#include "test_support.h"

namespace espresso {
namespace {

using testing::TempDir;

TEST(Compress, MagnitudeMaskKeepsTheLargestWeights) {
  const std::vector<float> w = {0.1f, -0.5f, 0.3f, 0.05f, -0.3f};
  EXPECT_EQ(compress::magnitude_mask(w, 0.4), (std::vector<std::uint8_t>{0, 1, 1, 0, 0}));
  EXPECT_EQ(compress::magnitude_mask(w, 0.6), (std::vector<std::uint8_t>{0, 1, 1, 0, 1}));
  EXPECT_EQ(compress::magnitude_mask(w, 1.0), (std::vector<std::uint8_t>{1, 1, 1, 1, 1}));
  EXPECT_THROW(compress::magnitude_mask(w, 0.0), ModelError);
  EXPECT_THROW(compress::magnitude_mask(w, 1.5), ModelError);
}

TEST(Compress, KMeansFromLinearInitialisationFindsTheTwoGroups) {
  const std::vector<float> w = {1.0f, 1.2f, 0.8f, 0.0f, 5.0f, 5.5f, 4.5f, 100.0f};
  const std::vector<std::uint8_t> mask = {1, 1, 1, 0, 1, 1, 1, 0};
  const compress::Clusters c = compress::kmeans_linear(w, mask, 2, 10);
  ASSERT_EQ(c.centroids.size(), 2u);
  EXPECT_FLOAT_EQ(c.centroids[0], 1.0f);
  EXPECT_FLOAT_EQ(c.centroids[1], 5.0f);
  EXPECT_EQ(c.assignment, (std::vector<int>{0, 0, 0, -1, 1, 1, 1, -1}));
  // Linear initialisation with no iteration: evenly spaced between min 0.8 and max 5.5.
  const compress::Clusters start = compress::kmeans_linear(w, mask, 3, 0);
  EXPECT_FLOAT_EQ(start.centroids[0], 0.8f);
  EXPECT_FLOAT_EQ(start.centroids[1], 0.8f + 0.5f * 4.7f);
  EXPECT_FLOAT_EQ(start.centroids[2], 5.5f);
}

class CompressLeNet : public testing::SharedDataTest {};

std::string write_text(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

// Caffe's LeNet with its shared train/test net reading the IDX files, small test batches.
compress::CompressOptions lenet_options(const TempDir& dir) {
  const auto lenet = testing::shared_data_dir() / "caffe" / "lenet";
  const std::string mnist = (testing::shared_data_dir() / "mnist").string();
  // The shared train/test net, reading the IDX files, with small test batches.
  std::ifstream in(lenet / "v2_format" / "lenet_train_test.prototxt");
  std::string net((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const char* lmdb : {"examples/mnist/mnist_train_lmdb", "examples/mnist/mnist_test_lmdb"}) {
    net.replace(net.find(lmdb), std::strlen(lmdb), "idx:" + mnist);
  }
  while (net.find("backend: LMDB") != std::string::npos) net.replace(net.find("backend: LMDB"), 13, "");
  net.replace(net.find("batch_size: 100"), 15, "batch_size: 50");
  write_text(dir.file("net.prototxt"), net);
  const std::string solver = write_text(dir.file("solver.prototxt"),
                                        "net: \"net.prototxt\"\ntest_iter: 4\ntest_interval: 1000000\n"
                                        "base_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: \"fixed\"\n"
                                        "max_iter: 1000\nsnapshot: 0\nrandom_seed: 3\n");
  compress::CompressOptions o;
  o.solver = solver;
  o.weights = (lenet / "lenet_iter_10000.caffemodel").string();
  o.deploy = (lenet / "v2_format" / "lenet.prototxt").string();
  o.output = dir.file("lenet.esp");
  return o;
}

TEST_F(CompressLeNet, TinyRunKeepsPrunedWeightsZeroAndAccountsSizesRight) {
  TempDir dir;
  compress::CompressOptions o = lenet_options(dir);
  o.layers = {{"conv2", 0.2, 4}, {"ip1", 0.05, 3}, {"ip2", 0.5, 0}};
  o.prune_stages = 2;
  o.prune_iterations = 4;
  o.share_iterations = 4;
  const compress::CompressReport report = compress::compress_model(o);

  const Graph original = load_model(o.deploy, o.weights);
  const Graph packed = load_model(o.output);
  for (const compress::LayerPlan& plan : o.layers) {
    const Tensor& w = packed.find_layer(plan.layer)->weights[0];
    const std::vector<float> v = w.to_vector();
    std::int64_t nonzero = 0;
    std::set<float> distinct;
    for (float x : v) {
      nonzero += x != 0.0f;
      if (x != 0.0f) distinct.insert(x);
    }
    // The retraining moved every weight it was allowed to: the pruned ones would be nonzero without masks.
    EXPECT_LE(nonzero, static_cast<std::int64_t>(std::ceil(plan.density * static_cast<double>(v.size()))))
        << plan.layer;
    EXPECT_GT(nonzero, static_cast<std::int64_t>(0.9 * plan.density * static_cast<double>(v.size()))) << plan.layer;
    if (plan.bits > 0) {
      EXPECT_LE(distinct.size(), static_cast<std::size_t>((1 << plan.bits) - 1)) << plan.layer;
    } else {
      EXPECT_GT(distinct.size(), 256u) << plan.layer;  // not shared
    }
    // Unplanned and planned layers changed by retraining: the biases too.
    EXPECT_NE(packed.find_layer(plan.layer)->weights[1].to_vector(),
              original.find_layer(plan.layer)->weights[1].to_vector());
  }
  // conv1 was not planned: retrained, but dense.
  for (float x : packed.find_layer("conv1")->weights[0].to_vector()) {
    if (x == 0.0f) ADD_FAILURE() << "conv1 has a zero weight";
  }

  // Sizes: f32 bytes from the original model; stored bytes from the package's own tensor table.
  std::uint64_t dense = 0;
  for (const LayerSpec& l : original.layers) {
    for (const Tensor& t : l.weights) dense += static_cast<std::uint64_t>(t.numel()) * 4;
  }
  const std::string bytes = testing::read_bytes(o.output);
  std::uint32_t flags;
  std::uint64_t manifest_bytes;
  std::memcpy(&flags, bytes.data() + 12, 4);
  std::memcpy(&manifest_bytes, bytes.data() + 24, 8);
  ASSERT_EQ(flags, 1u);  // the manifest is deflated (format version 3)
  const std::string stored_manifest = bytes.substr(64, manifest_bytes);
  std::string text(1 << 20, '\0');
  uLongf text_bytes = text.size();
  ASSERT_EQ(uncompress(reinterpret_cast<Bytef*>(text.data()), &text_bytes,
                       reinterpret_cast<const Bytef*>(stored_manifest.data()), stored_manifest.size()),
            Z_OK);
  text.resize(text_bytes);
  const nlohmann::json manifest = nlohmann::json::parse(text);
  std::uint64_t stored = 0;
  int encoded = 0;
  for (const auto& t : manifest["tensors"]) {
    stored += t["bytes"].get<std::uint64_t>();
    encoded += t.contains("encoding");
  }
  // conv2's and ip1's weights; ip2's, pruned but not shared, keep more than 256 values and stay f32.
  EXPECT_EQ(encoded, 2);
  EXPECT_EQ(report.dense_bytes, dense);
  EXPECT_EQ(report.bytes, stored);
  EXPECT_DOUBLE_EQ(report.ratio(), static_cast<double>(dense) / static_cast<double>(stored));
  EXPECT_EQ(report.file_bytes, bytes.size());
  EXPECT_EQ(report.metric, "accuracy");
  EXPECT_GT(report.accuracy_before, 0.95);
  EXPECT_GT(report.accuracy_after, 0.5);
  const std::string table = compress::format_report(report);
  EXPECT_NE(table.find("ip1"), std::string::npos) << table;
}

TEST_F(CompressLeNet, UnknownLayersAndBadPlansAreModelErrors) {
  TempDir dir;
  compress::CompressOptions o = lenet_options(dir);
  o.prune_iterations = o.share_iterations = 0;
  for (const compress::LayerPlan& plan : {compress::LayerPlan{"nope", 0.5, 0}, compress::LayerPlan{"ip1", 0.0, 0},
                                          compress::LayerPlan{"ip1", 0.5, 9}, compress::LayerPlan{"prob", 0.5, 0}}) {
    o.layers = {plan};
    EXPECT_THROW(compress::compress_model(o), ModelError) << plan.layer;
  }
  o.layers = {{"ip1", 0.5, 0}, {"ip1", 0.4, 0}};
  EXPECT_THROW(compress::compress_model(o), ModelError);
  EXPECT_FALSE(std::filesystem::exists(o.output));
}

}  // namespace
}  // namespace espresso
