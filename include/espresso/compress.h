// Deep Compression (Han, Mao and Dally): magnitude pruning with retraining under masks, k-means weight
// sharing with centroid retraining, and Huffman coding into a compressed .esp (docs/compression.md).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <vector>

#include "espresso/tensor.h"

namespace espresso::compress {

// What to do to one layer's weight blob (blob 0; biases stay as they are).
struct LayerPlan {
  std::string layer;
  double density = 1.0;  // fraction of the weights kept, (0, 1]
  int bits = 0;          // weight sharing: 2^bits - 1 shared values plus zero (1..8); 0: none
};

struct CompressOptions {
  std::string solver;   // Caffe solver file: its train net retrains, its test net measures accuracy
  std::string weights;  // the trained caffemodel to start from
  std::string deploy;   // deploy prototxt for the output package
  std::string output;   // the compressed .esp to write
  std::vector<LayerPlan> layers;
  int prune_stages = 3;                    // prune to the target densities in this many steps...
  std::int64_t prune_iterations = 1000;    // ...each followed by this much retraining under the masks
  std::int64_t share_iterations = 1000;    // retraining of the shared centroids
  int kmeans_iterations = 30;
  Device device = Device::cpu();
  std::ostream* log = nullptr;  // the trainer's lines; nullptr: discarded
};

struct LayerReport {
  std::string layer;
  std::int64_t weights = 0;   // blob 0's values
  std::int64_t nonzero = 0;   // of them, nonzero after compression
  int shared_values = 0;      // distinct nonzero values (0: no sharing)
  double bits_index = 0;      // mean bits per stored entry: codebook index
  double bits_gap = 0;        // mean bits per stored entry: relative index
  std::uint64_t dense_bytes = 0;  // every blob of the layer as f32
  std::uint64_t bytes = 0;        // every blob as the package stores it
};

struct CompressReport {
  std::vector<LayerReport> layers;  // every layer with learned blobs
  std::string metric;               // the test output the accuracies are of, e.g. "accuracy"
  double accuracy_before = 0, accuracy_pruned = 0, accuracy_after = 0;
  std::uint64_t dense_bytes = 0, bytes = 0;  // summed over layers
  std::uint64_t file_bytes = 0;              // the written .esp, manifest included
  double ratio() const { return bytes == 0 ? 0.0 : static_cast<double>(dense_bytes) / static_cast<double>(bytes); }
};

// Runs the pipeline and writes options.output. Throws the trainer's errors, and ModelError for a planned
// layer the net lacks or a density or bit width out of range.
CompressReport compress_model(const CompressOptions& options);

// The paper-style table: one row per layer and a total, then the accuracies.
std::string format_report(const CompressReport& report);

// ---- the building blocks ----

// 1 for the ceil(density * n) weights of largest magnitude (ties broken by position), 0 elsewhere.
std::vector<std::uint8_t> magnitude_mask(std::span<const float> weights, double density);

// 1-D k-means over the weights where mask is 1, centroids initialised evenly between their minimum and
// maximum (the paper's linear initialisation). `assignment` holds each weight's cluster, or -1 where
// masked out.
struct Clusters {
  std::vector<float> centroids;
  std::vector<int> assignment;
};
Clusters kmeans_linear(std::span<const float> weights, std::span<const std::uint8_t> mask, int clusters,
                       int iterations);

}  // namespace espresso::compress
