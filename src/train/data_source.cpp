#include "train/data_source.h"

#include <algorithm>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>
#include <utility>

#include "data/cifar.h"
#include "espresso/data.h"
#include "data/lmdb.h"
#include "espresso/errors.h"
#include "import/caffe/caffe.pb.h"

namespace espresso::train {
namespace {

// SplitMix64: decorrelates the seeds of consecutive batches and epochs.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a: a name hash that is the same with every standard library.
std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) hash = (hash ^ c) * 0x100000001b3ULL;
  return hash;
}

class LmdbRecords : public RecordSource {
 public:
  explicit LmdbRecords(const std::string& path) : reader_(path) {}
  std::int64_t size() const override { return reader_.size(); }
  void read(std::int64_t position, data::Sample& out) override {
    const std::int64_t index = position % reader_.size();
    const std::string_view bytes = reader_.value_at(index);
    data::decode_datum(bytes, out, reader_.path() + ": record " + std::to_string(index));
  }
  std::string describe() const override { return "LMDB " + reader_.path(); }

 private:
  data::LmdbReader reader_;
};

// Images decoded once into memory (IDX, CIFAR-10); each epoch may visit them in its own order.
class MemoryRecords : public RecordSource {
 public:
  MemoryRecords(data::LabeledImages images, bool shuffle, std::uint64_t seed)
      : images_(std::move(images)), shuffle_(shuffle), seed_(seed) {
    if (images_.count == 0) throw DataError(images_.description + ": no images");
  }
  std::int64_t size() const override { return images_.count; }
  void read(std::int64_t position, data::Sample& out) override {
    const std::int64_t epoch = position / images_.count;
    std::int64_t index = position % images_.count;
    if (shuffle_) {
      if (epoch != order_epoch_) shuffle_order(epoch);
      index = order_[static_cast<std::size_t>(index)];
    }
    out.channels = images_.channels;
    out.height = images_.height;
    out.width = images_.width;
    out.label = images_.labels[static_cast<std::size_t>(index)];
    const std::uint8_t* pixels = images_.image(index);
    out.values.assign(pixels, pixels + images_.image_size());
  }
  std::string describe() const override { return images_.description; }

 private:
  // Fisher-Yates with our own draws, so the order is the same on every standard library.
  void shuffle_order(std::int64_t epoch) {
    order_.resize(static_cast<std::size_t>(images_.count));
    std::iota(order_.begin(), order_.end(), std::int64_t{0});
    std::mt19937_64 rng(mix(seed_ ^ mix(static_cast<std::uint64_t>(epoch))));
    for (std::size_t i = order_.size() - 1; i > 0; --i) std::swap(order_[i], order_[rng() % (i + 1)]);
    order_epoch_ = epoch;
  }

  data::LabeledImages images_;
  bool shuffle_;
  std::uint64_t seed_;
  std::vector<std::int64_t> order_;
  std::int64_t order_epoch_ = -1;
};

std::int64_t positive_int(const LayerSpec& spec, const char* name) {
  const std::int64_t value = spec.attrs.get_int(name, 0);
  if (value <= 0)
    throw ModelError("layer '" + spec.name + "' (Data): " + name + " must be positive, found " +
                     std::to_string(value));
  return value;
}

}  // namespace

std::unique_ptr<RecordSource> open_records(const std::string& source, const std::string& backend, Phase phase,
                                           bool shuffle, std::uint64_t seed,
                                           const std::function<std::string(const std::string&)>& resolve) {
  const data::Split split = phase == Phase::train ? data::Split::train : data::Split::test;
  if (source.starts_with("idx:")) {
    return std::make_unique<MemoryRecords>(data::load_mnist(resolve(source.substr(4)), split), shuffle, seed);
  }
  if (source.starts_with("cifar10:")) {
    return std::make_unique<MemoryRecords>(data::load_cifar10(resolve(source.substr(8)), split), shuffle,
                                           seed);
  }
  if (backend == "leveldb") {
    throw UnsupportedError(source +
                           ": LevelDB sources are not supported; set `backend: LMDB` (convert with " +
                           "`espresso convert-data`) or use an idx: or cifar10: source");
  }
  return std::make_unique<LmdbRecords>(resolve(source));
}

std::vector<float> read_mean_file(const std::string& path, Shape& shape) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw FileError(path + ": cannot open the mean file");
  std::stringstream bytes;
  bytes << file.rdbuf();
  caffe::BlobProto blob;
  if (!blob.ParseFromString(bytes.str())) throw DataError(path + ": not a binaryproto BlobProto mean");
  std::vector<std::int64_t> dims;
  if (blob.has_shape()) {
    dims.assign(blob.shape().dim().begin(), blob.shape().dim().end());
  } else {
    dims = {blob.num(), blob.channels(), blob.height(), blob.width()};
  }
  // Caffe stores 1 x C x H x W; keep C x H x W.
  while (dims.size() > 3 && dims.front() == 1) dims.erase(dims.begin());
  if (dims.size() != 3) throw DataError(path + ": the mean must be C x H x W, found " + Shape(dims).str());
  shape = Shape(dims);
  std::vector<float> values(blob.data().begin(), blob.data().end());
  if (static_cast<std::int64_t>(values.size()) != shape.numel()) {
    throw DataError(path + ": the mean has shape " + shape.str() + " but " + std::to_string(values.size()) +
                    " values");
  }
  return values;
}

Shape Transform::output_shape(const data::Sample& s) const {
  return crop > 0 ? Shape{s.channels, crop, crop} : Shape{s.channels, s.height, s.width};
}

void Transform::apply(const data::Sample& s, std::mt19937_64& rng, float* out) const {
  const std::int64_t height = crop > 0 ? crop : s.height;
  const std::int64_t width = crop > 0 ? crop : s.width;
  std::int64_t top = 0, left = 0;
  if (crop > 0) {
    if (phase == Phase::train) {
      top = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(s.height - crop + 1));
      left = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(s.width - crop + 1));
    } else {
      top = (s.height - crop) / 2;
      left = (s.width - crop) / 2;
    }
  }
  const bool flip = mirror && phase == Phase::train && (rng() & 1) != 0;
  for (std::int64_t c = 0; c < s.channels; ++c) {
    const float channel_mean = mean_values.empty()       ? 0.0f
                               : mean_values.size() == 1 ? mean_values[0]
                                                         : mean_values[static_cast<std::size_t>(c)];
    for (std::int64_t h = 0; h < height; ++h) {
      for (std::int64_t w = 0; w < width; ++w) {
        const std::size_t in = static_cast<std::size_t>((c * s.height + top + h) * s.width + left + w);
        const float mean = mean_image.empty() ? channel_mean : mean_image[in];
        const std::int64_t out_w = flip ? width - 1 - w : w;
        out[(c * height + h) * width + out_w] = (s.values[in] - mean) * scale;
      }
    }
  }
}

DataSource::DataSource(std::string name, std::unique_ptr<RecordSource> records, Transform transform,
                       std::int64_t batch_size, std::uint64_t seed, int depth, Shard shard)
    : name_(std::move(name)),
      records_(std::move(records)),
      transform_(std::move(transform)),
      batch_size_(batch_size),
      seed_(seed),
      depth_(static_cast<std::size_t>(std::max(depth, 1))),
      shard_(shard) {
  if (shard_.count < 1 || shard_.index < 0 || shard_.index >= shard_.count)
    throw ModelError(name_ + ": shard " + std::to_string(shard_.index) + " of " +
                     std::to_string(shard_.count));
  data::Sample first;
  records_->read(0, first);
  if (transform_.crop > 0 && (transform_.crop > first.height || transform_.crop > first.width)) {
    throw ModelError(name_ + ": crop_size " + std::to_string(transform_.crop) + " exceeds the " +
                     std::to_string(first.height) + "x" + std::to_string(first.width) + " records of " +
                     records_->describe());
  }
  if (!transform_.mean_image.empty() && static_cast<std::int64_t>(transform_.mean_image.size()) !=
                                            first.channels * first.height * first.width) {
    throw ModelError(name_ + ": the mean_file does not match the " + std::to_string(first.channels) + "x" +
                     std::to_string(first.height) + "x" + std::to_string(first.width) + " records of " +
                     records_->describe());
  }
  if (transform_.mean_values.size() > 1 &&
      static_cast<std::int64_t>(transform_.mean_values.size()) != first.channels) {
    throw ModelError(name_ + ": " + std::to_string(transform_.mean_values.size()) +
                     " mean_value entries for " + std::to_string(first.channels) + " channels");
  }
  std::vector<std::int64_t> dims = transform_.output_shape(first).dims();
  dims.insert(dims.begin(), batch_size_);
  data_shape_ = Shape(dims);
  start(0);
}

DataSource::~DataSource() { stop(); }

void DataSource::start(std::int64_t first) {
  stopping_ = false;
  failure_ = nullptr;
  ready_.clear();
  worker_ = std::thread([this, first] { produce(first); });
}

void DataSource::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void DataSource::seek(std::int64_t index) {
  stop();
  start(index);
}

Batch DataSource::make_batch(std::int64_t index, data::Sample& sample) {
  Batch batch{Tensor::empty(data_shape_), Tensor::empty(Shape{batch_size_})};
  float* out = batch.data.data<float>();
  float* labels = batch.labels.data<float>();
  const std::int64_t per_image = data_shape_.count(1);
  const std::int64_t first = (index * shard_.count + shard_.index) * batch_size_;
  for (std::int64_t i = 0; i < batch_size_; ++i) {
    const std::int64_t position = first + i;
    std::mt19937_64 rng(mix(seed_ ^ mix(static_cast<std::uint64_t>(position))));
    records_->read(position, sample);
    if (transform_.output_shape(sample) !=
        Shape(std::vector<std::int64_t>(data_shape_.dims().begin() + 1, data_shape_.dims().end()))) {
      throw DataError(records_->describe() + ": record " + std::to_string(position % records_->size()) +
                      " is " + std::to_string(sample.channels) + "x" + std::to_string(sample.height) + "x" +
                      std::to_string(sample.width) + ", unlike the first record");
    }
    transform_.apply(sample, rng, out + i * per_image);
    labels[i] = static_cast<float>(sample.label);
  }
  return batch;
}

void DataSource::produce(std::int64_t first) {
  data::Sample sample;
  try {
    for (std::int64_t index = first;; ++index) {
      Batch batch = make_batch(index, sample);
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || ready_.size() < depth_; });
      if (stopping_) return;
      ready_.push_back(std::move(batch));
      changed_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    failure_ = std::current_exception();
    changed_.notify_all();
  }
}

Batch DataSource::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return !ready_.empty() || failure_; });
  if (ready_.empty()) std::rethrow_exception(failure_);
  Batch batch = std::move(ready_.front());
  ready_.pop_front();
  changed_.notify_all();
  return batch;
}

std::vector<DataFeed> attach_data_sources(Graph& graph, Phase phase, std::uint64_t seed,
                                          const std::function<std::string(const std::string&)>& resolve,
                                          Shard shard) {
  static const std::set<std::string> kDataTypes = {"Data",      "DummyData",  "HDF5Data",
                                                   "ImageData", "MemoryData", "WindowData"};
  std::vector<DataFeed> feeds;
  std::vector<LayerSpec> kept;
  std::vector<InputSpec> inputs;
  for (LayerSpec& spec : graph.layers) {
    if (!kDataTypes.count(spec.type)) {
      kept.push_back(std::move(spec));
      continue;
    }
    if (spec.type != "Data") {
      throw UnsupportedError("layer '" + spec.name + "' (" + spec.type +
                             "): only Data layers can feed training; convert the data to an LMDB with "
                             "`espresso convert-data`");
    }
    if (spec.outputs.empty() || spec.outputs.size() > 2)
      throw ModelError("layer '" + spec.name + "' (Data): needs one or two tops (data, label)");
    const std::string source = spec.attrs.get_string("source", "");
    if (source.empty()) throw ModelError("layer '" + spec.name + "' (Data): data_param.source is missing");
    const std::int64_t batch = positive_int(spec, "batch_size");
    Transform transform;
    transform.phase = phase;
    transform.scale = static_cast<float>(spec.attrs.get_float("scale", 1.0));
    transform.crop = spec.attrs.get_int("crop_size", 0);
    transform.mirror = spec.attrs.get_int("mirror", 0) != 0;
    for (double v : spec.attrs.get_floats("mean_value", {}))
      transform.mean_values.push_back(static_cast<float>(v));
    const std::string mean_file = spec.attrs.get_string("mean_file", "");
    if (!mean_file.empty()) {
      if (!transform.mean_values.empty())
        throw ModelError("layer '" + spec.name + "' (Data): give mean_file or mean_value, not both");
      Shape mean_shape;
      transform.mean_image = read_mean_file(resolve(mean_file), mean_shape);
    }
    const std::uint64_t source_seed = mix(seed ^ mix(fnv1a(spec.name)));
    std::unique_ptr<RecordSource> records = open_records(source, spec.attrs.get_string("backend", "lmdb"),
                                                         phase, phase == Phase::train, source_seed, resolve);
    DataFeed feed;
    feed.layer = spec.name;
    feed.data_input = spec.outputs[0];
    feed.source = std::make_shared<DataSource>("layer '" + spec.name + "'", std::move(records),
                                               std::move(transform), batch, source_seed, 4, shard);
    inputs.push_back({feed.data_input, feed.source->data_shape()});
    if (spec.outputs.size() == 2) {
      feed.label_input = spec.outputs[1];
      inputs.push_back({feed.label_input, Shape{batch}});
    }
    feeds.push_back(std::move(feed));
  }
  graph.layers = std::move(kept);
  graph.inputs.insert(graph.inputs.end(), inputs.begin(), inputs.end());
  return feeds;
}

}  // namespace espresso::train
