#include "espresso/net.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "backends/cpu/cpu_backend.h"
#include "backends/cuda/cuda_backend.h"
#include "graph/memory_planner.h"
#include "layers/registry.h"

namespace espresso {

struct Net::Impl {
  Graph graph;
  NetOptions options;
  std::vector<std::unique_ptr<Layer>> layers;

  // Tensors by id: graph inputs first, then layer outputs in execution order.
  std::map<std::string, int> ids;
  std::vector<std::string> names;
  std::vector<int> producer;  // producing step, -1 for graph inputs
  std::vector<std::vector<int>> step_inputs, step_outputs;
  std::vector<int> input_ids, output_ids;
  std::map<std::string, Shape> input_shapes;
  // Set when the net runs on a GPU; declared before everything that holds device memory or
  // kernels so that it outlives them.
  std::unique_ptr<cuda::Context> cuda_context;
  // Each plan runs once without capture first: libraries initialise their handles lazily on first
  // use, which must not happen inside a graph capture.
  bool ran_uncaptured = false;

  // The plan for the current input shapes.
  bool planned = false;
  std::vector<Shape> shapes;
  std::vector<Tensor> tensors;
  std::vector<bool> readable;  // kept until the end of forward()
  std::vector<std::vector<Tensor>> step_input_views, step_output_views;
  std::vector<std::unique_ptr<Kernel>> kernels;
  std::vector<std::int64_t> step_macs;
  Tensor arena;
  MemoryReport report;

  void build();
  void plan();
  void make_kernels();
  void run_steps();
  void run_on_gpu();
  void infer_shapes();
  void check_weights(int step, const std::vector<Shape>& in);
  int id_of(const std::string& name) const;
};

namespace {

std::string join_shapes(const std::vector<Shape>& shapes) {
  std::string text;
  for (const Shape& s : shapes) text += (text.empty() ? "" : ", ") + s.str();
  return text.empty() ? "none" : text;
}

}  // namespace

void Net::Impl::build() {
  graph.validate();
  std::string unknown;
  for (const LayerSpec& spec : graph.layers) {
    if (!is_known_layer_type(spec.type)) {
      unknown += (unknown.empty() ? "" : ", ") + ("'" + spec.type + "' (layer '" + spec.name + "')");
    }
  }
  if (!unknown.empty()) {
    std::string known;
    for (const std::string& t : known_layer_types()) known += (known.empty() ? "" : " ") + t;
    throw ModelError("unknown layer types: " + unknown + "; known types: " + known);
  }
  for (const LayerSpec& spec : graph.layers) layers.push_back(create_layer(spec));
  if (!options.device.is_cpu()) {
    if (options.reference_kernels) {
      throw UnsupportedError("reference kernels run on the CPU only; create the Net on cpu to use them");
    }
    std::vector<const Layer*> all;
    for (const auto& layer : layers) all.push_back(layer.get());
    cuda::check_supported(all);
    cuda_context = cuda::create_context(options.device, options.device_weights);
  }

  auto add_tensor = [&](const std::string& name, int step) {
    ids[name] = static_cast<int>(names.size());
    names.push_back(name);
    producer.push_back(step);
  };
  for (const InputSpec& input : graph.inputs) {
    input_ids.push_back(static_cast<int>(names.size()));
    add_tensor(input.name, -1);
    input_shapes[input.name] = input.shape;
  }
  std::set<int> consumed;
  for (std::size_t step = 0; step < layers.size(); ++step) {
    const LayerSpec& spec = layers[step]->spec();
    std::vector<int> in, out;
    for (const std::string& name : spec.inputs) {
      in.push_back(ids.at(name));
      consumed.insert(in.back());
    }
    for (const std::string& name : spec.outputs) {
      add_tensor(name, static_cast<int>(step));
      out.push_back(ids.at(name));
    }
    step_inputs.push_back(std::move(in));
    step_outputs.push_back(std::move(out));
  }
  if (graph.outputs.empty()) {
    // Like Caffe: every layer output that nothing consumes is a net output.
    for (std::size_t id = input_ids.size(); id < names.size(); ++id) {
      if (!consumed.count(static_cast<int>(id))) graph.outputs.push_back(names[id]);
    }
  }
  for (const std::string& name : graph.outputs) output_ids.push_back(ids.at(name));
}

int Net::Impl::id_of(const std::string& name) const {
  auto alias = graph.aliases.find(name);
  auto it = ids.find(alias == graph.aliases.end() ? name : alias->second);
  if (it == ids.end()) throw ModelError("the net has no tensor named '" + name + "'");
  return it->second;
}

void Net::Impl::check_weights(int step, const std::vector<Shape>& in) {
  Layer& layer = *layers[static_cast<std::size_t>(step)];
  const std::vector<Shape> expected = layer.weight_shapes(in);
  std::vector<Tensor>& weights = layer.weights();
  if (weights.empty() && !expected.empty()) {
    // No weights were loaded (a prototxt alone): zeros, as the net's structure is still usable.
    for (const Shape& s : expected) weights.push_back(Tensor::zeros(s));
    return;
  }
  std::vector<Shape> found;
  for (const Tensor& w : weights) found.push_back(w.shape());
  if (found.size() != expected.size()) {
    throw ModelError("layer '" + layer.name() + "' (" + layer.type() + "): expected " +
                     std::to_string(expected.size()) + " weight blob(s) [" + join_shapes(expected) +
                     "], found " + std::to_string(found.size()) + " [" + join_shapes(found) + "]");
  }
  for (std::size_t i = 0; i < expected.size(); ++i) {
    if (found[i] != expected[i]) {
      throw ModelError("layer '" + layer.name() + "' (" + layer.type() + "): weight blob " +
                       std::to_string(i) + " should be " + expected[i].str() + ", found " +
                       found[i].str());
    }
    if (weights[i].dtype() != DType::f32 || !weights[i].device().is_cpu()) {
      throw UnsupportedError("layer '" + layer.name() + "': weights must be f32 on the CPU");
    }
  }
}

void Net::Impl::infer_shapes() {
  shapes.assign(names.size(), Shape{});
  step_macs.assign(layers.size(), 0);
  for (std::size_t i = 0; i < input_ids.size(); ++i) {
    shapes[static_cast<std::size_t>(input_ids[i])] = input_shapes.at(graph.inputs[i].name);
  }
  for (std::size_t step = 0; step < layers.size(); ++step) {
    const Layer& layer = *layers[step];
    std::vector<Shape> in;
    for (int id : step_inputs[step]) in.push_back(shapes[static_cast<std::size_t>(id)]);
    std::vector<Shape> out = layer.output_shapes(in);
    if (out.size() != step_outputs[step].size()) {
      throw ModelError("layer '" + layer.name() + "' (" + layer.type() + ") produces " +
                       std::to_string(out.size()) + " output(s) but the model names " +
                       std::to_string(step_outputs[step].size()));
    }
    for (std::size_t k = 0; k < out.size(); ++k) shapes[static_cast<std::size_t>(step_outputs[step][k])] = out[k];
    check_weights(static_cast<int>(step), in);
    step_macs[step] = layer.macs(in);
  }
}

void Net::Impl::plan() {
  planned = false;
  infer_shapes();
  const int steps = static_cast<int>(layers.size());

  // Lifetimes of layer outputs; graph outputs live to the end.
  std::vector<int> last_use(names.size());
  for (std::size_t id = 0; id < names.size(); ++id) last_use[id] = producer[id];
  for (int step = 0; step < steps; ++step) {
    for (int id : step_inputs[static_cast<std::size_t>(step)]) last_use[static_cast<std::size_t>(id)] = step;
  }
  for (int id : output_ids) last_use[static_cast<std::size_t>(id)] = steps;

  // Buffers: one per layer output, except that in-place layers reuse their input's buffer when
  // nothing reads the input afterwards.
  const std::set<int> outputs(output_ids.begin(), output_ids.end());
  std::vector<int> buffer_of(names.size(), -1);
  std::vector<BufferRequest> buffers;
  for (int step = 0; step < steps; ++step) {
    const auto& in = step_inputs[static_cast<std::size_t>(step)];
    const auto& out = step_outputs[static_cast<std::size_t>(step)];
    for (std::size_t k = 0; k < out.size(); ++k) {
      const auto id = static_cast<std::size_t>(out[k]);
      const std::size_t bytes = static_cast<std::size_t>(shapes[id].numel()) * sizeof(float);
      if (k == 0 && !options.keep_intermediates && layers[static_cast<std::size_t>(step)]->in_place() &&
          !in.empty()) {
        const auto source = static_cast<std::size_t>(in[0]);
        if (producer[source] >= 0 && last_use[source] == step && !outputs.count(in[0]) &&
            shapes[source].numel() == shapes[id].numel()) {
          const int buffer = buffer_of[source];
          buffer_of[id] = buffer;
          buffers[static_cast<std::size_t>(buffer)].last_step = last_use[id];
          continue;
        }
      }
      buffer_of[id] = static_cast<int>(buffers.size());
      buffers.push_back({bytes, options.keep_intermediates ? 0 : step,
                         options.keep_intermediates ? steps : last_use[id]});
    }
  }
  const MemoryPlan memory = plan_memory(buffers);
  // Naive: every layer output in its own buffer.
  report = {memory.arena_bytes, 0};
  for (std::size_t id = 0; id < names.size(); ++id) {
    if (producer[id] >= 0) report.naive_bytes += (static_cast<std::size_t>(shapes[id].numel()) * sizeof(float) + 63) / 64 * 64;
  }
  const Device device = options.device;
  if (cuda_context) cuda_context->drop_graph();
  ran_uncaptured = false;
  const Shape arena_shape{static_cast<std::int64_t>(memory.arena_bytes)};
  if (device.is_cpu()) {
    arena = Tensor::empty(arena_shape, DType::i8);
  } else {
    auto block =
        cuda::allocate(memory.arena_bytes, device, "the activation arena of net '" + graph.name + "'");
    arena = Tensor::wrap(block.get(), arena_shape, DType::i8, device, block);
  }

  tensors.assign(names.size(), Tensor{});
  readable.assign(names.size(), options.keep_intermediates);
  for (std::size_t i = 0; i < input_ids.size(); ++i) {
    const auto id = static_cast<std::size_t>(input_ids[i]);
    tensors[id] = Tensor::zeros(shapes[id], DType::f32, device);
    readable[id] = true;
  }
  auto* base = static_cast<std::byte*>(arena.raw());
  for (std::size_t id = 0; id < names.size(); ++id) {
    if (buffer_of[id] < 0) continue;
    tensors[id] = Tensor::wrap(base + memory.offsets[static_cast<std::size_t>(buffer_of[id])], shapes[id],
                               DType::f32, device);
  }
  for (int id : output_ids) readable[static_cast<std::size_t>(id)] = true;

  make_kernels();
  planned = true;
}

void Net::Impl::make_kernels() {
  kernels.clear();
  const auto steps = layers.size();
  step_input_views.assign(steps, {});
  step_output_views.assign(steps, {});
  std::string uncovered;
  for (std::size_t step = 0; step < steps; ++step) {
    const Layer& layer = *layers[step];
    std::vector<Shape> in_shapes;
    for (int id : step_inputs[step]) {
      step_input_views[step].push_back(tensors[static_cast<std::size_t>(id)]);
      in_shapes.push_back(shapes[static_cast<std::size_t>(id)]);
    }
    for (int id : step_outputs[step]) step_output_views[step].push_back(tensors[static_cast<std::size_t>(id)]);
    std::unique_ptr<Kernel> kernel;
    if (cuda_context) {
      try {
        kernel = cuda::make_kernel(layer, in_shapes, *cuda_context);
      } catch (const DeviceError& e) {
        throw DeviceError("layer '" + layer.name() + "' (" + layer.type() + "): " + e.what());
      }
      if (!kernel) {
        uncovered += (uncovered.empty() ? "" : ", ") +
                     ("'" + layer.name() + "' (" + layer.type() + ", inputs " + join_shapes(in_shapes) + ")");
      }
    } else {
      if (!options.reference_kernels) kernel = cpu::make_kernel(layer, in_shapes);
      if (!kernel) kernel = std::make_unique<ReferenceKernel>(layer);
    }
    kernels.push_back(std::move(kernel));
  }
  if (!uncovered.empty()) {
    kernels.clear();
    throw UnsupportedError("the CUDA kernels do not cover these layers with these shapes: " + uncovered);
  }
}

void Net::Impl::run_steps() {
  for (std::size_t step = 0; step < kernels.size(); ++step) {
    try {
      kernels[step]->forward(step_input_views[step], step_output_views[step]);
    } catch (const DeviceError& e) {
      const Layer& layer = *layers[step];
      throw DeviceError("layer '" + layer.name() + "' (" + layer.type() + "): " + e.what());
    }
  }
}

void Net::Impl::run_on_gpu() {
  cuda::Context& context = *cuda_context;
  if (options.cuda_graphs && ran_uncaptured) {
    if (!context.has_graph()) {
      context.begin_capture();
      try {
        run_steps();
      } catch (...) {
        context.abort_capture();
        throw;
      }
      context.end_capture();
    }
    context.launch_graph();
  } else {
    run_steps();
    ran_uncaptured = true;
  }
  try {
    context.synchronize();
  } catch (const DeviceError& e) {
    throw DeviceError(
        std::string("running net '") + graph.name + "' on " + options.device.str() + ": " + e.what() +
        (options.cuda_graphs
             ? " (create the Net with cuda_graphs off and set CUDA_LAUNCH_BLOCKING=1 to find the layer)"
             : " (set CUDA_LAUNCH_BLOCKING=1 to find the layer)"));
  }
}

Net::Net(Graph graph, NetOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->graph = std::move(graph);
  impl_->options = options;
  impl_->build();
}

Net::~Net() = default;
Net::Net(Net&&) noexcept = default;
Net& Net::operator=(Net&&) noexcept = default;

const Graph& Net::graph() const { return impl_->graph; }
const NetOptions& Net::options() const { return impl_->options; }

std::vector<std::string> Net::input_names() const {
  std::vector<std::string> names;
  for (const InputSpec& input : impl_->graph.inputs) names.push_back(input.name);
  return names;
}

std::vector<std::string> Net::output_names() const { return impl_->graph.outputs; }

Shape Net::input_shape(const std::string& name) const {
  auto it = impl_->input_shapes.find(name);
  if (it == impl_->input_shapes.end()) throw ModelError("the net has no input named '" + name + "'");
  return it->second;
}

void Net::reshape(const std::string& input, const Shape& shape) {
  auto it = impl_->input_shapes.find(input);
  if (it == impl_->input_shapes.end()) throw ModelError("the net has no input named '" + input + "'");
  if (it->second != shape) {
    it->second = shape;
    impl_->planned = false;
  }
}

void Net::set_batch(std::int64_t batch) {
  for (auto& [name, shape] : impl_->input_shapes) {
    if (shape.rank() == 0) continue;
    Shape resized = shape;
    resized[0] = batch;
    reshape(name, resized);
  }
}

Tensor& Net::input(const std::string& name) {
  auto it = impl_->ids.find(name);
  if (it == impl_->ids.end() || impl_->producer[static_cast<std::size_t>(it->second)] >= 0) {
    throw ModelError("the net has no input named '" + name + "'");
  }
  if (!impl_->planned) impl_->plan();
  return impl_->tensors[static_cast<std::size_t>(it->second)];
}

void Net::forward() {
  if (!impl_->planned) impl_->plan();
  if (impl_->cuda_context) {
    impl_->run_on_gpu();
  } else {
    impl_->run_steps();
  }
}

std::map<std::string, Tensor> Net::forward(const std::map<std::string, Tensor>& inputs) {
  for (const auto& [name, value] : inputs) reshape(name, value.shape());
  for (const auto& [name, value] : inputs) input(name).copy_from(value);
  forward();
  std::map<std::string, Tensor> results;
  for (const std::string& name : impl_->graph.outputs) results[name] = tensor(name).to(Device::cpu());
  return results;
}

const Tensor& Net::tensor(const std::string& name) const {
  if (!impl_->planned) throw ModelError("tensor '" + name + "' is not available before forward()");
  const int id = impl_->id_of(name);
  if (!impl_->readable[static_cast<std::size_t>(id)]) {
    throw UnsupportedError("tensor '" + name +
                           "' shares memory with others; create the Net with keep_intermediates to read it");
  }
  return impl_->tensors[static_cast<std::size_t>(id)];
}

std::vector<LayerSummary> Net::summary() {
  if (!impl_->planned) impl_->plan();
  std::vector<LayerSummary> rows;
  for (std::size_t step = 0; step < impl_->layers.size(); ++step) {
    const Layer& layer = *impl_->layers[step];
    LayerSummary row{layer.name(), layer.type(), {}, 0, 2 * impl_->step_macs[step], impl_->kernels[step]->name()};
    for (int id : impl_->step_outputs[step]) row.output_shapes.push_back(impl_->shapes[static_cast<std::size_t>(id)]);
    for (const Tensor& w : layer.weights()) row.params += w.numel();
    rows.push_back(std::move(row));
  }
  return rows;
}

MemoryReport Net::memory() {
  if (!impl_->planned) impl_->plan();
  return impl_->report;
}

}  // namespace espresso
