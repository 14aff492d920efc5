#include "espresso/model.h"

#include <set>

#include "espresso/errors.h"
#include "espresso/package.h"
#include "layers/registry.h"

namespace espresso {

std::size_t Model::bytes_needed(const Graph& graph, Device device) {
  if (!device.is_cpu()) return DeviceWeights::bytes_needed(graph);
  std::set<const void*> seen;
  std::size_t bytes = 0;
  for (const LayerSpec& layer : graph.layers) {
    for (const Tensor& w : layer.weights) {
      if (seen.insert(w.raw()).second) bytes += w.bytes();
    }
  }
  return bytes;
}

Model::Model(Graph graph, Device device) : graph_(std::move(graph)), device_(device) {
  graph_.validate();
  check_layer_attributes(graph_);
  bytes_ = bytes_needed(graph_, device_);
  if (!device_.is_cpu()) device_weights_ = DeviceWeights::upload(graph_, device_);
}

std::shared_ptr<const Model> Model::load_esp(const std::string& path, Device device) {
  return std::make_shared<const Model>(load_package(path), device);
}

std::shared_ptr<const Model> Model::load_esp(std::span<const std::byte> bytes, Device device) {
  return std::make_shared<const Model>(load_package(bytes), device);
}

Session::Session(std::shared_ptr<const Model> model, SessionOptions options) : model_(std::move(model)) {
  if (!model_) throw ModelError("a Session needs a model");
  NetOptions net_options;
  net_options.device = model_->device();
  net_options.device_weights = model_->device_weights();
  net_options.cuda_graphs = options.cuda_graphs;
  net_options.keep_intermediates = options.keep_intermediates;
  net_options.threads = options.threads;
  net_options.stateful = options.stateful;
  net_options.max_planned_bytes = options.max_planned_bytes;
  net_options.precision = options.precision;
  net_options.strict_precision = options.strict_precision;
  net_ = std::make_unique<Net>(model_->graph(), net_options);
}

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

std::vector<std::string> Session::input_names() const { return net_->input_names(); }
std::vector<std::string> Session::output_names() const { return net_->output_names(); }
Shape Session::input_shape(const std::string& name) const { return net_->input_shape(name); }
void Session::reshape(const std::string& input, const Shape& shape) { net_->reshape(input, shape); }
void Session::set_batch(std::int64_t batch) { net_->set_batch(batch); }
Tensor& Session::input(const std::string& name) { return net_->input(name); }
void Session::forward() { net_->forward(); }
void Session::reset_state() { net_->reset_state(); }
std::map<std::string, Tensor> Session::run(const std::map<std::string, Tensor>& inputs) {
  return net_->forward(inputs);
}
const Tensor& Session::output(const std::string& name) const { return net_->tensor(name); }
double Session::last_forward_ms() const { return net_->last_forward_ms(); }
std::vector<LayerSummary> Session::summary() { return net_->summary(); }
MemoryReport Session::memory() { return net_->memory(); }

}  // namespace espresso
