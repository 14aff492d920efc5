// Training data outside the graph: each Caffe Data layer becomes two graph inputs (data, label) fed by a
// DataSource that prepares batches on a prefetch thread, so compute never waits on I/O.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "data/datum.h"
#include "espresso/graph.h"
#include "espresso/import.h"
#include "espresso/tensor.h"

namespace espresso::train {

// Records addressed by position. Positions past the end wrap into the next epoch; sources that allow it
// visit each epoch in a fresh seeded order.
class RecordSource {
 public:
  virtual ~RecordSource() = default;
  virtual std::int64_t size() const = 0;
  virtual void read(std::int64_t position, data::Sample& out) = 0;
  virtual std::string describe() const = 0;
};

// Where records come from, as written in data_param.source:
//   DIR (backend LMDB)  a Caffe LMDB of Datum records;
//   idx:DIR             MNIST-layout IDX files ({train,t10k}-{images,labels}...[.gz]);
//   cifar10:DIR         CIFAR-10 binary batches.
// idx: and cifar10: read the split of the net's phase (TRAIN: train, TEST: test) and may shuffle.
// `resolve` turns a path from the model into an existing one (or throws FileError).
std::unique_ptr<RecordSource> open_records(const std::string& source, const std::string& backend, Phase phase,
                                           bool shuffle, std::uint64_t seed,
                                           const std::function<std::string(const std::string&)>& resolve);

// Caffe's transform_param: crop (random in TRAIN, centred in TEST), mirror (TRAIN only), subtract a
// per-pixel mean (mean_file, a binaryproto BlobProto) or per-channel mean_value, then scale.
struct Transform {
  float scale = 1.0f;
  std::vector<float> mean_image;   // channels x height x width of the stored records
  std::vector<float> mean_values;  // one per channel, or one for all
  std::int64_t crop = 0;
  bool mirror = false;
  Phase phase = Phase::test;

  Shape output_shape(const data::Sample& sample) const;
  // Writes the transformed sample to `out` (output_shape values).
  void apply(const data::Sample& sample, std::mt19937_64& rng, float* out) const;
};

// Reads a Caffe binaryproto mean (BlobProto) as channels x height x width values.
std::vector<float> read_mean_file(const std::string& path, Shape& shape);

struct Batch {
  Tensor data;    // N x C x H x W
  Tensor labels;  // N
};

// Data-parallel training: rank `index` of `count` reads its slice of every global batch of
// batch_size x count records, so the ranks together see what one process with the global batch would.
struct Shard {
  int index = 0;
  int count = 1;
};

// Prepares batches on its own thread, `depth` ahead of use. Batch k is a function of (seed, k) only, so
// a run that starts at batch k (resuming) sees exactly what an uninterrupted run would. Each record's
// random crop and mirror follow from (seed, record position), so they do not depend on how the global
// batch is split across ranks.
class DataSource {
 public:
  DataSource(std::string name, std::unique_ptr<RecordSource> records, Transform transform,
             std::int64_t batch_size, std::uint64_t seed, int depth = 4, Shard shard = {});
  ~DataSource();
  DataSource(const DataSource&) = delete;
  DataSource& operator=(const DataSource&) = delete;

  const std::string& name() const { return name_; }
  Shape data_shape() const { return data_shape_; }  // with the batch
  std::int64_t batch_size() const { return batch_size_; }
  const RecordSource& records() const { return *records_; }

  // Restarts the stream at batch `index` (drops anything prefetched).
  void seek(std::int64_t index);
  // The next batch; rethrows what went wrong on the prefetch thread (naming the source).
  Batch next();

 private:
  void start(std::int64_t first);
  void stop();
  void produce(std::int64_t first);
  Batch make_batch(std::int64_t index, data::Sample& sample);

  std::string name_;
  std::unique_ptr<RecordSource> records_;
  Transform transform_;
  std::int64_t batch_size_;
  std::uint64_t seed_;
  std::size_t depth_;
  Shard shard_;
  Shape data_shape_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Batch> ready_;
  std::exception_ptr failure_;
  bool stopping_ = false;
  std::thread worker_;
};

// A Data layer of the model, turned into two graph inputs.
struct DataFeed {
  std::string layer;
  std::string data_input;
  std::string label_input;  // empty when the layer has one top
  std::shared_ptr<DataSource> source;
};

// Removes the data-source layers from `graph`, opens a DataSource for each and adds their tops as graph
// inputs shaped from the first record. Only Data layers are supported; other data-source types throw
// UnsupportedError naming the layer.
// `shard` splits the records of each global batch among data-parallel ranks.
std::vector<DataFeed> attach_data_sources(Graph& graph, Phase phase, std::uint64_t seed,
                                          const std::function<std::string(const std::string&)>& resolve,
                                          Shard shard = {});

}  // namespace espresso::train
