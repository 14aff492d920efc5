// Model and Session: what a server or an app embeds. A Model is immutable and shared: the graph and,
// on a GPU, its weights resident there, uploaded once. A Session is one caller's state for running it:
// activations, plan, stream, its own CPU threads; cheap to create, used by one thread at a time (as
// ncnn's Net and Extractor, or ONNX Runtime's model and Run state).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "espresso/device_weights.h"
#include "espresso/graph.h"
#include "espresso/net.h"
#include "espresso/tensor.h"

namespace espresso {

class Model {
 public:
  // Checks the graph (layer types, attributes, weights on the host) and, on a GPU, uploads the
  // weights. Throws ModelError, DeviceError.
  Model(Graph graph, Device device = Device::cpu());
  // load_model (Caffe, ONNX, .esp, TFLite) and the constructor. Part of the importers' component
  // (espresso::models, which links protobuf); inference-only applications linking espresso::runtime alone
  // load .esp packages with load_esp.
  static std::shared_ptr<const Model> load(const std::string& path, const std::string& weights_path = "",
                                           Device device = Device::cpu());
  // An .esp package (load_package) from a file or from memory: all that espresso::runtime needs.
  static std::shared_ptr<const Model> load_esp(const std::string& path, Device device = Device::cpu());
  static std::shared_ptr<const Model> load_esp(std::span<const std::byte> bytes, Device device = Device::cpu());
  // Weight bytes a model of `graph` holds on `device`: every distinct weight once (host bytes on the
  // CPU, aligned device bytes on a GPU).
  static std::size_t bytes_needed(const Graph& graph, Device device);

  const Graph& graph() const { return graph_; }
  Device device() const { return device_; }
  std::size_t bytes() const { return bytes_; }
  // The device copy of the weights (nullptr on the CPU, where sessions read the host weights).
  const std::shared_ptr<const DeviceWeights>& device_weights() const { return device_weights_; }

 private:
  Graph graph_;
  Device device_;
  std::size_t bytes_ = 0;
  std::shared_ptr<const DeviceWeights> device_weights_;
};

struct SessionOptions {
  // Worker threads for this session's CPU kernels; 0 shares the process's pool.
  int threads = 0;
  // On a GPU, replay the work as a CUDA graph after the first runs (NetOptions::cuda_graphs).
  bool cuda_graphs = true;
  // Every tensor readable after forward() (debugging; more memory).
  bool keep_intermediates = false;
  // Recurrent layers carry their states from one run to the next (NetOptions::stateful), so a model
  // can take audio or text chunk by chunk; reset_state() starts a new sequence.
  bool stateful = false;
  // The most activation memory this session may plan (NetOptions::max_planned_bytes); 0: the default.
  std::int64_t max_planned_bytes = 0;
  // The arithmetic of the session's layers (NetOptions::precision; fp16/bf16 weights are converted
  // once per session), and whether a layer without a kernel in it is an error (strict_precision).
  Precision precision = Precision::fp32;
  bool strict_precision = false;
};

class Session {
 public:
  // Throws DeviceError, ModelError (planning happens on first use).
  explicit Session(std::shared_ptr<const Model> model, SessionOptions options = {});
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  const Model& model() const { return *model_; }
  std::vector<std::string> input_names() const;
  std::vector<std::string> output_names() const;
  Shape input_shape(const std::string& name) const;
  // Changes an input's shape; the next run plans again.
  void reshape(const std::string& input, const Shape& shape);
  void set_batch(std::int64_t batch);
  // The buffer to fill for an input, on the model's device.
  Tensor& input(const std::string& name);
  void forward();
  // Forgets the carried recurrent states (SessionOptions::stateful).
  void reset_state();
  // Copies the inputs in (reshaping as needed), runs, and returns every graph output on the CPU.
  std::map<std::string, Tensor> run(const std::map<std::string, Tensor>& inputs);
  // A graph output of the last forward(), on the device of the layer that made it.
  const Tensor& output(const std::string& name) const;
  double last_forward_ms() const;
  std::vector<LayerSummary> summary();
  MemoryReport memory();

 private:
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Net> net_;
};

}  // namespace espresso
