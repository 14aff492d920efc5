#include "espresso/net.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <new>
#include <optional>
#include <set>
#include <tuple>

#include "backends/cpu/conv_tactics.h"
#include "backends/registry.h"
#include "backends/tactic_cache.h"
#include "core/device_memory.h"
#include "core/parallel.h"
#include "espresso/limits.h"
#include "graph/memory_planner.h"
#include "layers/activation.h"
#include "layers/batch_norm.h"
#include "layers/binary.h"
#include "layers/concat.h"
#include "layers/control_flow.h"
#include "layers/filler.h"
#include "layers/pooling.h"
#include "layers/registry.h"
#include "layers/relu.h"
#include "layers/scale.h"
#include "runtime/image_lanes.h"

namespace espresso {

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::fp32:
      return "fp32";
    case Precision::tf32:
      return "tf32";
    case Precision::fp16:
      return "fp16";
    case Precision::bf16:
      return "bf16";
    case Precision::int8:
      return "int8";
  }
  return "fp32";
}

Precision parse_precision(const std::string& text) {
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::fp16, Precision::bf16, Precision::int8}) {
    if (text == precision_name(p)) return p;
  }
  throw UnsupportedError("unknown precision '" + text + "'; expected fp32, tf32, fp16, bf16 or int8");
}

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
  // The queue of the net's device, and of the CPU for layers that fall back to it; declared before
  // everything that holds device memory or kernels so that they outlive them.
  std::unique_ptr<ThreadGroup> threads;  // NetOptions::threads, when the net has its own
  Backend* backend = nullptr;
  std::unique_ptr<Stream> stream;
  std::unique_ptr<Stream> host_stream;
  // Each plan runs once without capture first: libraries initialise their handles lazily on first
  // use, which must not happen inside a graph capture.
  bool ran_uncaptured = false;

  // The plan for the current input shapes.
  bool planned = false;
  std::vector<Shape> shapes;
  std::vector<Tensor> tensors;
  std::vector<bool> readable;  // kept until the end of forward() (and of backward() when training)
  std::vector<bool> readable_until_backward;  // training: intact from forward() until backward() runs
  bool backward_ran = false;                  // since the last forward()
  std::vector<std::vector<Tensor>> step_input_views, step_output_views;
  std::vector<std::unique_ptr<Kernel>> kernels;
  std::vector<Device> step_device;    // where each layer runs: the net's device, or cpu as fallback
  std::vector<Device> tensor_device;  // where each tensor is produced
  // Mixed precision: the type each layer computes and stores its outputs in, and each tensor's type.
  std::vector<DType> step_dtype;
  std::vector<DType> tensor_dtype;
  // Channels-last plans (fp16/bf16 inference where the backend has such kernels): the steps whose kernels
  // store their layout-sensitive tensors N, H, W, C, and the tensors stored so.
  std::vector<bool> step_channels_last;
  std::vector<bool> tensor_channels_last;
  bool channels_last_declined = false;  // make_kernels: the plan has CPU steps, which read no such tensor
  std::vector<std::string> step_precision, step_precision_note;  // LayerSummary::precision, ::precision_note
  bool tf32 = false;                                             // the stream accepted Precision::tf32
  // Inputs that live on another device, in another type or in another layout than the layer reading
  // them, copied and converted before it runs: `staging` (the source's type on the reader's device) when
  // device and type differ.
  struct Transfer {
    int source;
    Tensor copy;
    Tensor staging;
    bool relayout = false;  // channels moved to the copy's layout (never with another device)
  };
  // Graph outputs stored in a low precision (or channels-last), converted to the f32 tensors the caller
  // reads at the end of each forward.
  struct OutputCast {
    int id;
    Tensor value;
  };
  std::vector<OutputCast> output_casts;
  std::vector<std::vector<Transfer>> step_transfers;
  std::vector<std::string> fallbacks;  // "'name' (Type)" of layers moved to the CPU
  std::vector<Tensor> arenas;
  // Per tensor: for a Concat's output, the first step its buffer is reserved from (else -1).
  std::vector<int> concat_starts;
  std::vector<std::int64_t> step_macs;
  MemoryReport report;

  // Training (NetOptions::training).
  std::vector<std::vector<float>> loss_weights;  // per step, per output
  std::vector<bool> step_runs_backward;          // some output carries a gradient
  std::vector<Tensor> grads;                     // per tensor; undefined where none flows
  std::vector<bool> carries;                     // per tensor: a gradient flows to it
  std::vector<bool> step_backward_in_place;      // the step's input gradient shares its output's
  // Training fusions (fuse_training_steps): per step, the later steps whose work its kernel does, and
  // the step whose kernel does this step's work (or -1).
  std::vector<std::vector<int>> step_absorbs;
  std::vector<int> fused_into;
  // Per step: gradients set (to their loss weight, or zero) just before the step's backward.
  std::vector<std::vector<std::pair<Tensor, float>>> grad_fills;
  // Buffers before this index hold activations and copies; after it gradients (and the workspaces).
  std::size_t activation_buffers = 0;
  std::vector<std::vector<Tensor>> step_input_grads, step_output_grads;
  std::vector<std::vector<Tensor>> weight_grads;  // per step, per weight; shared blobs share one
  // Mixed precision training: the gradient of an input a step reads converted to its own type (Transfer).
  // The step's backward adds into `converted`, which is then added, converted back, into `target`.
  struct GradientCast {
    Tensor converted;
    Tensor target;
  };
  std::vector<std::vector<GradientCast>> step_grad_casts;
  // Training: each step's kernel workspace (Stream::take_workspace_request), and where the plan put it
  // for the step's forward and its backward (lent to the stream just before each).
  std::vector<std::size_t> step_workspace_request;
  struct LentWorkspace {
    void* memory = nullptr;
    std::size_t bytes = 0;
  };
  std::vector<LentWorkspace> forward_workspace, backward_workspace;
  // Lends a workspace to the stream for the life of the scope (a kernel's call), exceptions included.
  class Lending {
   public:
    Lending(Stream& stream, const LentWorkspace& lent) : stream_(stream) {
      stream_.lend_workspace(lent.memory, lent.bytes);
    }
    ~Lending() { stream_.lend_workspace(nullptr, 0); }
    Lending(const Lending&) = delete;
    Lending& operator=(const Lending&) = delete;

   private:
    Stream& stream_;
  };
  float loss_scale = 1.0f;  // Net::set_loss_scale
  Tensor overflow_flags;    // per parameter (i32): its gradient is not finite; fp16 training only
  std::vector<Tensor> overflow_checked;  // the parameters' gradients, in overflow_flags' order
  std::vector<Parameter> params;                  // unique learned blobs
  bool forwarded = false;                         // a forward() ran since planning
  std::vector<std::vector<std::vector<float>>> carried;  // per step: what a stateful kernel carries
  double last_forward_ms = 0.0;
  // ESPRESSO_PROFILE_LAYERS: wall seconds and calls per step, forward and backward, printed to stderr when
  // the net goes (as `caffe time`). The step's stream is synchronised around each timed kernel, so device
  // kernels count their own time, not their launch. Each step's first call is left out: it pays once for
  // what libraries set up lazily (cuDNN's algorithm timing, cuBLAS's modules).
  bool profile_layers = std::getenv("ESPRESSO_PROFILE_LAYERS") != nullptr;
  struct StepTime {
    double seconds = 0.0;
    long calls = 0;
    bool first_seen = false;
  };
  std::vector<StepTime> forward_time, backward_time;
  template <typename Run>
  void timed(std::vector<StepTime>& times, std::size_t step, Run&& run);
  void print_profile() const;

  void read_loss_weights();
  void share_weights();
  void decide_gradients();
  void fuse_training_steps(const std::vector<int>& reads, const std::vector<float>& tensor_loss_weight);
  // The tensor a step that absorbed others writes last (its absorbed steps' output), or -1.
  int fused_output(std::size_t step) const;
  // `grad_cast_buffer`: per step and input, the buffer of that input's gradient in the step's type, or -1.
  void plan_gradients(const std::vector<int>& grad_fill_step, const std::vector<float>& tensor_loss_weight,
                      const std::vector<std::vector<int>>& grad_cast_buffer,
                      const std::vector<std::byte*>& address);
  void plan_overflow_check();
  void run_backward();
  void queue_backward();
  // forward_backward(): whether a whole step (forward and backward) ran unrecorded since planning, so
  // that libraries and workspaces are set up.
  bool step_ran_uncaptured = false;
  // A recording failed (run_recorded): the net runs its work unrecorded from then on.
  bool recording_failed = false;
  bool can_capture_training() const;
  void run_recorded(const std::function<void()>& work, bool record, bool& ran_plain, const std::string& what);
  std::function<void(const std::string&)> backward_observer;
  void require_training(const char* what) const;

  void build();
  void plan();
  void make_kernels();
  // Training (share_weights): every weight on options.device (f32 ones in one block), and their
  // gradients; `borrowed` marks the later users of a shared blob, which take their owner's.
  void move_weights_to_device(const std::vector<std::vector<bool>>& borrowed);
  void make_weight_gradients(const std::vector<std::vector<bool>>& borrowed);
  // report.busiest_moment / busiest_buffers from the plan's buffers.
  // `named`: buffers that hold no tensor of the graph (copies, their gradients, workspaces), with a name
  // each.
  void describe_busiest_moment(const std::vector<BufferRequest>& buffers,
                               const std::vector<int>& buffer_arena, const std::vector<int>& buffer_of,
                               const std::vector<int>& grad_buffer_of,
                               const std::vector<std::pair<int, std::string>>& named);
  DType low_precision_dtype() const;
  // Whether the step reads a converted copy of the tensor (it lives on another device or in another type).
  bool reads_copy(std::size_t step, int id) const;
  // An input converted for the steps that read it on another device or in another type: one per tensor,
  // device and type, written before its first reader runs. A conversion on the same device has its buffer
  // in the arena like the layers' outputs; an upload from another device, which does not wait for the
  // work queued on this one, gets memory of its own (buffer -1).
  struct PlannedCopy {
    int source;
    Device device;
    DType dtype;
    bool channels_last;
    int buffer;  // in the plan's buffers, or -1
  };
  using CopyKey = std::tuple<int, DeviceType, DType, bool>;
  // Whether the step reads tensor `id` channels-last, and the key of the copy it reads instead of it.
  bool reads_channels_last(std::size_t step, int id) const {
    return step_channels_last[step] && layout_sensitive(shapes[static_cast<std::size_t>(id)]);
  }
  CopyKey copy_key(std::size_t step, int id) const {
    return {id, step_device[step].type, step_dtype[step], reads_channels_last(step, id)};
  }
  // Places the plan's buffers in one arena per device (`buffer_arena`: 0 for the net's device, 1 for the
  // CPU's when layers fall back there) and wraps the
  // tensors and gradients in them; returns each buffer's address.
  // Buffers from `workspaces_begin` on are the kernels' workspaces.
  std::vector<std::byte*> place_tensors(const std::vector<int>& buffer_of,
                                        const std::vector<BufferRequest>& buffers,
                                        std::size_t workspaces_begin, const std::vector<int>& buffer_arena,
                                        const std::vector<int>& grad_buffer_of,
                                        const std::vector<std::pair<int, std::string>>& named);
  void connect_steps(const std::vector<PlannedCopy>& copies, const std::map<CopyKey, std::size_t>& copy_of,
                     const std::vector<std::byte*>& address);
  void fuse_steps();
  int fuse_residual_on_other(std::size_t step, int out, Kernel& kernel, const std::vector<int>& readers,
                             const std::vector<int>& reader, const std::set<int>& outputs);
  void fuse_max_pooling(std::size_t step, int out, Kernel& kernel, const std::vector<int>& readers,
                        const std::vector<int>& reader, const std::set<int>& outputs, std::vector<int>& writer);
  void run_steps();
  void run();
  // CPU inference on a batch: image lanes (runtime/image_lanes.h) where they measured faster than the plan
  // spreading each layer over the threads; decided at the first run() of a plan, by the tactic cache or by
  // timing both, once per model, batch, thread count and machine.
  std::unique_ptr<ImageLanes> lanes;
  bool lanes_decided = false;
  void decide_lanes();
  bool channels_last_pays() const;
  bool lanes_eligible(int threads, bool forced) const;
  std::unique_ptr<ImageLanes> make_lanes(int threads, std::int64_t micro) const;
  void run_lanes(ImageLanes& runner);
  Stream& stream_for(Device device);
  static std::string display_name(const Backend& backend);
  void infer_shapes();
  void check_weights(int step, const std::vector<Shape>& in);
  int id_of(const std::string& name) const;
};

namespace {

// A DeviceError again, its message in `before` and `after`, of the same kind: out of memory stays
// OutOfMemoryError, so that callers can still tell it from a failing device.
[[noreturn]] void rethrow_device_error(const DeviceError& e, const std::string& before,
                                       const std::string& after = "") {
  const std::string message = before + e.what() + after;
  if (dynamic_cast<const OutOfMemoryError*>(&e) != nullptr) throw OutOfMemoryError(message);
  throw DeviceError(message);
}

// Layers that stay fp32 whatever the net's precision: their outputs are probabilities or losses, or
// they reduce over many values (normalisation statistics), where fp16's range and bf16's precision
// lose too much.
bool stays_fp32(const std::string& type) {
  static const std::set<std::string> kept = {"Softmax",
                                             "LogSoftmax",
                                             "SoftmaxWithLoss",
                                             "EuclideanLoss",
                                             "SigmoidCrossEntropyLoss",
                                             "Accuracy",
                                             "Normalize",
                                             "LRN",
                                             "Reduce",
                                             "DetectionOutput",
                                             "PriorBox"};
  return kept.count(type) != 0;
}

// Layers whose products TF32 rounds (Precision::tf32); the others compute in fp32 as always.
bool uses_tf32(const std::string& type) {
  return type == "Convolution" || type == "InnerProduct" || type == "MatMul";
}

// A control-flow layer's subgraph planned and run as a Net of its own, on the CPU (the layer runs there).
class NetSubnet final : public Subnet {
 public:
  NetSubnet(const Graph& graph, const NetOptions& options) : net_(graph, options), names_(net_.input_names()) {}
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) override {
    if (inputs.size() != names_.size()) {
      throw ShapeError("the graph takes " + std::to_string(names_.size()) + " inputs, got " +
                       std::to_string(inputs.size()));
    }
    for (std::size_t i = 0; i < inputs.size(); ++i) net_.reshape(names_[i], inputs[i].shape());
    for (std::size_t i = 0; i < inputs.size(); ++i) net_.input(names_[i]).copy_from(inputs[i]);
    net_.forward();
    std::vector<Tensor> results;
    for (const std::string& name : net_.output_names()) results.push_back(net_.tensor(name));
    return results;
  }

 private:
  Net net_;
  std::vector<std::string> names_;
};

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
  NetOptions nested;
  nested.reference_kernels = options.reference_kernels;
  nested.max_planned_bytes = options.max_planned_bytes;
  for (auto& layer : layers) {
    if (auto* flow = dynamic_cast<ControlFlowLayer*>(layer.get())) {
      flow->bind([nested](const Graph& subgraph) -> std::unique_ptr<Subnet> {
        return std::make_unique<NetSubnet>(subgraph, nested);
      });
    }
  }
  if (options.training) {
    for (std::size_t step = 0; step < layers.size(); ++step) {
      layers[step]->set_training(true);
      // Distinct, repeatable streams per layer.
      layers[step]->set_seed(options.seed * 0x9E3779B97F4A7C15ull + step);
    }
  }
  if (options.stateful && options.training) {
    throw UnsupportedError("net '" + graph.name + "': a stateful net runs inference only, not training");
  }
  carried.resize(layers.size());
  if (!options.device.is_cpu() && options.reference_kernels) {
    throw UnsupportedError("reference kernels run on the CPU only; create the Net on cpu to use them");
  }
  if (options.threads < 0) throw UnsupportedError("NetOptions::threads must be 0 or more");
  if (options.threads > 0) threads = std::make_unique<ThreadGroup>(options.threads);
  if (options.training && options.precision != Precision::fp32) {
    const bool mixed = options.precision == Precision::fp16 || options.precision == Precision::bf16;
    if (!mixed) {
      throw UnsupportedError("net '" + graph.name + "': precision " + precision_name(options.precision) +
                             " is for inference; train in fp32, fp16 or bf16");
    }
    if (options.device.is_cpu()) {
      throw UnsupportedError("net '" + graph.name + "': mixed precision training (" +
                             precision_name(options.precision) + ") runs on a GPU; train on the CPU in fp32");
    }
  }
  backend = &backend_for(options.device);
  stream = backend->create_stream(options.device, options.device_weights);
  if (options.precision == Precision::tf32) tf32 = stream->allow_tf32(true);

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
  read_loss_weights();
}

void Net::Impl::read_loss_weights() {
  for (const auto& layer : layers) {
    const std::size_t outputs = layer->spec().outputs.size();
    std::vector<float> weights(outputs);
    if (layer->spec().attrs.has("loss_weight")) {
      const std::vector<double> given = layer->spec().attrs.get_floats("loss_weight", {});
      if (given.size() != outputs) {
        throw ModelError("layer '" + layer->name() + "' (" + layer->type() +
                         "): attribute 'loss_weight' has " + std::to_string(given.size()) + " values for " +
                         std::to_string(outputs) + " outputs");
      }
      std::copy(given.begin(), given.end(), weights.begin());
    } else {
      for (std::size_t k = 0; k < outputs; ++k) weights[k] = layer->default_loss_weight(static_cast<int>(k));
    }
    loss_weights.push_back(std::move(weights));
  }
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
  for (std::size_t i = 0; i < expected.size(); ++i) {
    checked_numel(expected[i].dims(), sizeof(float),
                  "layer '" + layer.name() + "' (" + layer.type() + ") weight " + std::to_string(i));
  }
  std::vector<Tensor>& weights = layer.weights();
  if (weights.empty() && !expected.empty()) {
    // No weights were loaded (a prototxt alone): zeros, as the net's structure is still usable, or
    // when training the model's fillers (blob 0 `weight_filler`, blob 1 `bias_filler`), seeded.
    std::mt19937_64 engine(options.seed * 0x2545F4914F6CDD1Dull + static_cast<std::uint64_t>(step));
    for (std::size_t i = 0; i < expected.size(); ++i) {
      Tensor blob = Tensor::zeros(expected[i]);
      if (options.training && i < 2) {
        try {
          fill(read_filler(layer.spec().attrs, i == 0 ? "weight_filler" : "bias_filler"), blob, engine);
        } catch (const Error& e) {
          throw ModelError("layer '" + layer.name() + "' (" + layer.type() + "): " + e.what());
        }
      }
      weights.push_back(std::move(blob));
    }
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
                       std::to_string(i) + " should be " + expected[i].str() + ", found " + found[i].str());
    }
    if (weights[i].dtype() != DType::f32 || (!weights[i].device().is_cpu() && weights[i].device() != options.device)) {
      throw UnsupportedError("layer '" + layer.name() + "': weights must be f32 on the CPU or on " +
                             options.device.str());
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
    for (std::size_t k = 0; k < out.size(); ++k) {
      // Attributes from a file can ask for any output size: checked before kernels or arenas see it.
      checked_numel(out[k].dims(), sizeof(float),
                    "layer '" + layer.name() + "' (" + layer.type() + ") output " + std::to_string(k));
      shapes[static_cast<std::size_t>(step_outputs[step][k])] = out[k];
    }
    check_weights(static_cast<int>(step), in);
    step_macs[step] = layer.macs(in);
  }
}

void Net::Impl::plan() {
  planned = false;
  lanes.reset();
  lanes_decided = false;
  infer_shapes();
  // Kernels keep pointers to the weights, so a training net's weights are shared and on its device
  // before they are made.
  if (options.training) share_weights();
  make_kernels();
  const int steps = static_cast<int>(layers.size());
  tensor_device.assign(names.size(), options.device);
  tensor_dtype.assign(names.size(), DType::f32);
  tensor_channels_last.assign(names.size(), false);
  for (int step = 0; step < steps; ++step) {
    for (int id : step_outputs[static_cast<std::size_t>(step)]) {
      tensor_device[static_cast<std::size_t>(id)] = step_device[static_cast<std::size_t>(step)];
      tensor_dtype[static_cast<std::size_t>(id)] = step_dtype[static_cast<std::size_t>(step)];
      tensor_channels_last[static_cast<std::size_t>(id)] =
          reads_channels_last(static_cast<std::size_t>(step), id);
    }
  }

  // Lifetimes of layer outputs on one timeline: forward step s at time s; when training, the backward
  // of step s at 2·steps − 1 − s. Graph outputs and losses live to the end.
  const bool training = options.training;
  if (training) decide_gradients();
  const int end = training ? 2 * steps : steps;
  const auto backward_time = [&](int step) { return 2 * steps - 1 - step; };
  std::vector<int> last_use(names.size()), reads(names.size(), 0);
  for (std::size_t id = 0; id < names.size(); ++id) last_use[id] = producer[id];
  for (int step = 0; step < steps; ++step) {
    for (int id : step_inputs[static_cast<std::size_t>(step)]) {
      last_use[static_cast<std::size_t>(id)] = step;
      ++reads[static_cast<std::size_t>(id)];
    }
  }
  for (int id : output_ids) last_use[static_cast<std::size_t>(id)] = end;
  std::vector<float> tensor_loss_weight(names.size(), 0.0f);
  for (int step = 0; step < steps; ++step) {
    const auto& out = step_outputs[static_cast<std::size_t>(step)];
    for (std::size_t k = 0; k < out.size(); ++k)
      tensor_loss_weight[static_cast<std::size_t>(out[k])] = loss_weights[static_cast<std::size_t>(step)][k];
  }
  const bool separate = options.keep_intermediates;
  step_absorbs.assign(layers.size(), {});
  fused_into.assign(layers.size(), -1);
  if (training && !separate && !options.reference_kernels) fuse_training_steps(reads, tensor_loss_weight);
  // Whether the step's own backward reads its inputs (a fused step's backward is its owner's).
  const auto backward_reads_inputs = [&](std::size_t step) {
    return training && step_runs_backward[step] && fused_into[step] < 0 &&
           kernels[step]->backward_reads_inputs();
  };
  if (training) {
    // Backward reads the inputs of its layer (or their copies, kept below), and the outputs unless the
    // layer says it never does.
    for (int step = 0; step < steps; ++step) {
      const auto us = static_cast<std::size_t>(step);
      if (!step_runs_backward[us] || fused_into[us] >= 0) continue;
      auto keep = [&](int id) {
        auto& last = last_use[static_cast<std::size_t>(id)];
        last = std::max(last, backward_time(step));
      };
      if (backward_reads_inputs(us)) {
        for (int id : step_inputs[us])
          if (!reads_copy(us, id)) keep(id);
      }
      if (layers[us]->backward_reads_outputs()) {
        for (int id : step_outputs[us]) keep(id);
      }
    }
    for (std::size_t id = 0; id < names.size(); ++id) {
      if (tensor_loss_weight[id] != 0.0f) last_use[id] = end;  // loss() reads them after backward
    }
  }

  // Buffers: one per layer output, except that in-place layers reuse their input's buffer when
  // nothing reads the input afterwards. With keep_intermediates every tensor keeps its own (the naive
  // plan); otherwise, when training, activations and their gradients share one arena, each buffer
  // free after its last reader in forward or backward (docs/training-memory.md).
  const std::set<int> outputs(output_ids.begin(), output_ids.end());
  std::vector<int> buffer_of(names.size(), -1);
  std::vector<BufferRequest> buffers;
  std::vector<bool> overwritten(names.size(), false);  // by an in-place layer during forward
  std::vector<PlannedCopy> copies;
  std::map<CopyKey, std::size_t> copy_of;
  std::map<CopyKey, int> copy_readers;
  for (int step = 0; step < steps; ++step) {
    const auto us = static_cast<std::size_t>(step);
    for (int id : step_inputs[us])
      if (reads_copy(us, id)) ++copy_readers[copy_key(us, id)];
  }
  const auto bytes_of = [&](std::size_t id, DType dtype) {
    return static_cast<std::size_t>(checked_numel(shapes[id].dims(), sizeof(float),
                                                  "net '" + graph.name + "': tensor '" + names[id] + "'") *
                                    static_cast<std::int64_t>(dtype_size(dtype)));
  };
  for (int step = 0; step < steps; ++step) {
    const auto us = static_cast<std::size_t>(step);
    const auto& in = step_inputs[us];
    const auto& out = step_outputs[us];
    // The copies this step reads: made before its first reader runs, kept to the last one's last read.
    for (int id : in) {
      if (!reads_copy(us, id)) continue;
      const CopyKey key = copy_key(us, id);
      auto [it, first] = copy_of.try_emplace(key, copies.size());
      if (first) {
        const bool other_device = tensor_device[static_cast<std::size_t>(id)] != step_device[us];
        copies.push_back({id, step_device[us], step_dtype[us], reads_channels_last(us, id),
                          other_device ? -1 : static_cast<int>(buffers.size())});
        if (!other_device)
          buffers.push_back({bytes_of(static_cast<std::size_t>(id), step_dtype[us]), separate ? 0 : step,
                             separate ? end : step});
      }
      if (const int buffer = copies[it->second].buffer; buffer >= 0 && !separate) {
        auto& request = buffers[static_cast<std::size_t>(buffer)];
        request.last_step =
            std::max(request.last_step, backward_reads_inputs(us) ? backward_time(step) : step);
      }
    }
    // Inside a fused chain (the Scale before a fused ReLU) no value is ever written: no buffer.
    const int owner = fused_into[us];
    if (owner >= 0 && step_absorbs[static_cast<std::size_t>(owner)].back() != step) continue;
    for (std::size_t k = 0; k < out.size(); ++k) {
      const auto id = static_cast<std::size_t>(out[k]);
      const std::size_t bytes = bytes_of(id, tensor_dtype[id]);
      if (k == 0 && !separate && layers[us]->in_place() && !in.empty() && reads_copy(us, in[0])) {
        // In place over the copy of its input, which only this step reads.
        const CopyKey key = copy_key(us, in[0]);
        const PlannedCopy& copy = copies[copy_of.at(key)];
        if (copy.buffer >= 0 && copy_readers.at(key) == 1 && copy.dtype == tensor_dtype[id] &&
            copy.channels_last == tensor_channels_last[id] && copy.device == tensor_device[id] &&
            buffers[static_cast<std::size_t>(copy.buffer)].bytes == bytes &&
            (!training || layers[us]->in_place_while_training())) {
          auto& request = buffers[static_cast<std::size_t>(copy.buffer)];
          buffer_of[id] = copy.buffer;
          request.last_step = std::max(request.last_step, last_use[id]);
          continue;
        }
      } else if (k == 0 && !separate && layers[us]->in_place() && !in.empty()) {
        const auto source = static_cast<std::size_t>(in[0]);
        bool can = producer[source] >= 0 && buffer_of[source] >= 0 && !outputs.count(in[0]) &&
                   shapes[source].numel() == shapes[id].numel() &&
                   tensor_device[source] == tensor_device[id] && tensor_dtype[source] == tensor_dtype[id] &&
                   tensor_channels_last[source] == tensor_channels_last[id];
        if (training) {
          // The input's values are gone once the layer ran: only its own backward may read it (and
          // finds the output there, which the layer allows), and its producer's backward must not.
          const auto writer = static_cast<std::size_t>(producer[source]);
          can = can && reads[source] == 1 && tensor_loss_weight[source] == 0.0f &&
                layers[us]->in_place_while_training() &&
                (!step_runs_backward[writer] || !layers[writer]->backward_reads_outputs());
        } else {
          can = can && last_use[source] == step;
        }
        if (can) {
          const int buffer = buffer_of[source];
          buffer_of[id] = buffer;
          auto& request = buffers[static_cast<std::size_t>(buffer)];
          request.last_step = std::max(request.last_step, last_use[id]);
          overwritten[source] = true;
          continue;
        }
      }
      buffer_of[id] = static_cast<int>(buffers.size());
      buffers.push_back({bytes, separate ? 0 : step, separate ? end : last_use[id]});
    }
  }
  // A fused kernel writes its absorbed steps' output when it runs, before their own steps.
  for (std::size_t step = 0; step < layers.size(); ++step) {
    const int out = fused_output(step);
    if (out >= 0) {
      auto& request = buffers[static_cast<std::size_t>(buffer_of[static_cast<std::size_t>(out)])];
      request.first_step = std::min(request.first_step, static_cast<int>(step));
    }
  }
  activation_buffers = buffers.size();

  // Gradients, when training: the gradient of a tensor lives from the first backward step that adds
  // into it (where it is set to its loss weight, or zero) to its producer's backward, which reads it.
  // An element-wise layer whose input only it reads computes that input's gradient in place over its
  // output's (Layer::backward_in_place).
  std::vector<int> grad_buffer_of(names.size(), -1);
  std::vector<int> grad_fill_step(names.size(), -1);
  step_backward_in_place.assign(layers.size(), false);
  if (training) {
    std::vector<int> first_writer(names.size(), -1);  // the latest step that adds into the gradient
    for (int step = 0; step < steps; ++step) {
      const auto us = static_cast<std::size_t>(step);
      if (!step_runs_backward[us]) continue;
      for (std::size_t k = 0; k < step_inputs[us].size(); ++k) {
        const auto id = static_cast<std::size_t>(step_inputs[us][k]);
        if (carries[id] && producer[id] >= 0 && layers[us]->differentiable_input(k)) first_writer[id] = step;
      }
    }
    for (int step = steps - 1; step >= 0; --step) {
      const auto us = static_cast<std::size_t>(step);
      if (!step_runs_backward[us]) continue;
      // Inside a fused chain no gradient flows between the steps: the kernel reads the last one's.
      const int owner = fused_into[us];
      if (!step_absorbs[us].empty() ||
          (owner >= 0 && step_absorbs[static_cast<std::size_t>(owner)].back() != step))
        continue;
      for (int id : step_outputs[us]) {
        const auto u = static_cast<std::size_t>(id);
        if (grad_buffer_of[u] >= 0) continue;
        const int fill = first_writer[u] >= 0 ? first_writer[u] : step;
        grad_fill_step[u] = fill;
        grad_buffer_of[u] = static_cast<int>(buffers.size());
        const auto bytes = static_cast<std::size_t>(shapes[u].numel()) * dtype_size(tensor_dtype[u]);
        buffers.push_back({bytes, separate ? 0 : backward_time(fill), separate ? end : backward_time(step)});
      }
      if (owner >= 0) {  // the chain's last step: the owner's backward reads its output's gradient
        auto& request =
            buffers[static_cast<std::size_t>(grad_buffer_of[static_cast<std::size_t>(step_outputs[us][0])])];
        request.last_step = std::max(request.last_step, backward_time(owner));
        continue;
      }
      const auto& in = step_inputs[us];
      const auto& out = step_outputs[us];
      if (separate || in.empty() || out.empty()) continue;
      const auto x = static_cast<std::size_t>(in[0]);
      const auto y = static_cast<std::size_t>(out[0]);
      if (carries[x] && producer[x] >= 0 && layers[us]->differentiable_input(0) && reads[x] == 1 &&
          tensor_loss_weight[x] == 0.0f && shapes[x].numel() == shapes[y].numel() &&
          tensor_dtype[x] == tensor_dtype[y] && kernels[us]->backward_in_place(*layers[us])) {
        grad_buffer_of[x] = grad_buffer_of[y];
        auto& request = buffers[static_cast<std::size_t>(grad_buffer_of[y])];
        request.last_step = std::max(request.last_step, backward_time(producer[x]));
        step_backward_in_place[us] = true;
      }
    }
  }
  // A step reading a copy adds its input's gradient into one in its own type, converted back into the
  // gradient once its backward ran: a buffer for that moment alone.
  std::vector<std::vector<int>> grad_cast_buffer(layers.size());
  std::vector<std::pair<int, std::string>> named;
  for (const PlannedCopy& copy : copies) {
    if (copy.buffer >= 0)
      named.emplace_back(copy.buffer, names[static_cast<std::size_t>(copy.source)] + " as " +
                                          dtype_name(copy.dtype) +
                                          (copy.channels_last ? " channels-last" : ""));
  }
  for (int step = 0; training && step < steps; ++step) {
    const auto us = static_cast<std::size_t>(step);
    for (std::size_t k = 0; k < step_inputs[us].size(); ++k) {
      const auto id = static_cast<std::size_t>(step_inputs[us][k]);
      const bool cast = step_runs_backward[us] && grad_buffer_of[id] >= 0 && carries[id] &&
                        layers[us]->differentiable_input(k) && tensor_dtype[id] != step_dtype[us];
      grad_cast_buffer[us].push_back(cast ? static_cast<int>(buffers.size()) : -1);
      if (!cast) continue;
      named.emplace_back(static_cast<int>(buffers.size()),
                         "gradient of " + names[id] + " as " + dtype_name(step_dtype[us]));
      buffers.push_back({bytes_of(id, step_dtype[us]), separate ? 0 : backward_time(step),
                         separate ? end : backward_time(step)});
    }
  }
  // Each kernel's workspace for the moments it runs (forward, backward), after the activations and gradients.
  const std::size_t workspaces_begin = buffers.size();
  std::vector<int> forward_workspace_buffer(layers.size(), -1), backward_workspace_buffer(layers.size(), -1);
  for (int step = 0; training && step < steps; ++step) {
    const auto us = static_cast<std::size_t>(step);
    const std::size_t bytes = step_workspace_request[us];
    if (bytes == 0 || fused_into[us] >= 0) continue;
    forward_workspace_buffer[us] = static_cast<int>(buffers.size());
    named.emplace_back(static_cast<int>(buffers.size()), "workspace of " + layers[us]->name());
    buffers.push_back({bytes, step, step});
    if (step_runs_backward[us]) {
      backward_workspace_buffer[us] = static_cast<int>(buffers.size());
      named.emplace_back(static_cast<int>(buffers.size()), "workspace of " + layers[us]->name());
      buffers.push_back({bytes, backward_time(step), backward_time(step)});
    }
  }
  concat_starts.assign(names.size(), -1);
  if (!separate && !training && !options.reference_kernels) {
    // A channel Concat's output lives from the first step that may write into it in place (see
    // fuse_steps), so that nothing else is placed there meanwhile.
    for (int step = 0; step < steps; ++step) {
      const auto us = static_cast<std::size_t>(step);
      if (!dynamic_cast<const ConcatLayer*>(layers[us].get()) || step_outputs[us].size() != 1) continue;
      int start = step;
      for (int id : step_inputs[us]) {
        // Back through up to three single-reader steps (clamp, add) to the convolution.
        int writer = producer[static_cast<std::size_t>(id)];
        for (int hop = 0; hop < 3 && writer >= 0; ++hop) {
          start = std::min(start, writer);
          const auto& in = step_inputs[static_cast<std::size_t>(writer)];
          if (in.empty()) break;
          writer = producer[static_cast<std::size_t>(in[0])];
        }
      }
      const int out = step_outputs[us][0];
      auto& request = buffers[static_cast<std::size_t>(buffer_of[static_cast<std::size_t>(out)])];
      request.first_step = std::min(request.first_step, start);
      concat_starts[static_cast<std::size_t>(out)] = request.first_step;
    }
  }
  stream->drop_capture();
  ran_uncaptured = false;
  step_ran_uncaptured = false;
  std::vector<int> buffer_arena(buffers.size(), 0);
  for (std::size_t id = 0; id < names.size(); ++id) {
    if (buffer_of[id] >= 0 && tensor_device[id] != options.device)
      buffer_arena[static_cast<std::size_t>(buffer_of[id])] = 1;
  }
  for (const PlannedCopy& copy : copies) {
    if (copy.buffer >= 0 && copy.device != options.device)
      buffer_arena[static_cast<std::size_t>(copy.buffer)] = 1;
  }
  const std::vector<std::byte*> address =
      place_tensors(buffer_of, buffers, workspaces_begin, buffer_arena, grad_buffer_of, named);
  forward_workspace.assign(layers.size(), {});
  backward_workspace.assign(layers.size(), {});
  for (std::size_t step = 0; step < layers.size(); ++step) {
    for (auto [buffer, lent] : {std::pair{forward_workspace_buffer[step], &forward_workspace[step]},
                                std::pair{backward_workspace_buffer[step], &backward_workspace[step]}}) {
      if (buffer >= 0) *lent = {address[static_cast<std::size_t>(buffer)], step_workspace_request[step]};
    }
  }
  readable.assign(names.size(), separate);
  readable_until_backward.assign(names.size(), separate);
  for (std::size_t id = 0; id < names.size(); ++id) {
    if (buffer_of[id] < 0 || overwritten[id] || separate) continue;
    const int last = buffers[static_cast<std::size_t>(buffer_of[id])].last_step;
    readable[id] = last >= end;
    readable_until_backward[id] = last >= steps - 1;
  }
  for (int id : input_ids) readable[static_cast<std::size_t>(id)] = true;
  for (int id : output_ids) readable[static_cast<std::size_t>(id)] = true;
  connect_steps(copies, copy_of, address);
  if (!options.training && !options.keep_intermediates && !options.reference_kernels) fuse_steps();
  if (options.training) {
    plan_gradients(grad_fill_step, tensor_loss_weight, grad_cast_buffer, address);
    plan_overflow_check();
  }
  forwarded = false;
  planned = true;
}

void Net::Impl::describe_busiest_moment(const std::vector<BufferRequest>& buffers,
                                        const std::vector<int>& buffer_arena,
                                        const std::vector<int>& buffer_of,
                                        const std::vector<int>& grad_buffer_of,
                                        const std::vector<std::pair<int, std::string>>& named) {
  // Moments as the plan numbers them: forward of step t at t, its backward at 2 · steps − 1 − t.
  const int steps = static_cast<int>(layers.size());
  const int end = options.training ? 2 * steps : steps;
  std::vector<std::size_t> in_use(static_cast<std::size_t>(end) + 1, 0);
  for (std::size_t b = 0; b < buffers.size(); ++b) {
    if (buffer_arena[b] != 0) continue;  // the main device's arena only
    for (int t = std::max(buffers[b].first_step, 0); t <= std::min(buffers[b].last_step, end); ++t)
      in_use[static_cast<std::size_t>(t)] += buffers[b].bytes;
  }
  const auto busiest = static_cast<int>(std::max_element(in_use.begin(), in_use.end()) - in_use.begin());
  if (busiest < steps) {
    report.busiest_moment = "forward of '" + layers[static_cast<std::size_t>(busiest)]->name() + "'";
  } else if (busiest < end) {
    report.busiest_moment =
        "backward of '" + layers[static_cast<std::size_t>(end - 1 - busiest)]->name() + "'";
  } else {
    report.busiest_moment = "the end of the step";
  }
  // Each buffer once, under the first tensor placed in it (a copy a ReLU ran over: under its output).
  std::vector<bool> listed(buffers.size(), false);
  const auto add = [&](int buffer, const std::string& name) {
    if (buffer < 0 || listed[static_cast<std::size_t>(buffer)] ||
        buffer_arena[static_cast<std::size_t>(buffer)] != 0)
      return;
    const BufferRequest& request = buffers[static_cast<std::size_t>(buffer)];
    if (request.first_step > busiest || request.last_step < busiest) return;
    listed[static_cast<std::size_t>(buffer)] = true;
    report.busiest_buffers.emplace_back(name, request.bytes);
  };
  for (std::size_t id = 0; id < names.size(); ++id) add(buffer_of[id], names[id]);
  for (std::size_t id = 0; id < names.size(); ++id) add(grad_buffer_of[id], "gradient of " + names[id]);
  for (const auto& [buffer, name] : named) add(buffer, name);
  std::stable_sort(report.busiest_buffers.begin(), report.busiest_buffers.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
}

std::vector<std::byte*> Net::Impl::place_tensors(const std::vector<int>& buffer_of,
                                                 const std::vector<BufferRequest>& buffers,
                                                 std::size_t workspaces_begin,
                                                 const std::vector<int>& buffer_arena,
                                                 const std::vector<int>& grad_buffer_of,
                                                 const std::vector<std::pair<int, std::string>>& named) {
  // One arena per device that runs layers, each planned over the buffers of the tensors made there.
  std::vector<Device> devices{options.device};
  if (!fallbacks.empty()) devices.push_back(Device::cpu());
  report = {};
  arenas.clear();
  std::vector<std::size_t> offsets(buffers.size());
  for (std::size_t d = 0; d < devices.size(); ++d) {
    std::vector<BufferRequest> requests;
    std::vector<std::size_t> members;
    for (std::size_t b = 0; b < buffers.size(); ++b) {
      if (buffer_arena[b] != static_cast<int>(d)) continue;
      requests.push_back(buffers[b]);
      members.push_back(b);
    }
    const MemoryPlan memory = plan_memory(requests);
    for (std::size_t k = 0; k < members.size(); ++k) offsets[members[k]] = memory.offsets[k];
    report.planned_bytes += memory.arena_bytes;
    const std::int64_t cap = options.max_planned_bytes > 0 ? options.max_planned_bytes : limits().max_planned_bytes;
    if (report.planned_bytes > static_cast<std::size_t>(cap)) {
      throw LimitError("net '" + graph.name + "': its activation arena needs " +
                       std::to_string(report.planned_bytes) + " bytes, above the limit of " +
                       std::to_string(cap) + " (NetOptions::max_planned_bytes, Limits::max_planned_bytes)");
    }
    const Device device = devices[d];
    std::shared_ptr<void> block = backend_for(device).allocate(
        memory.arena_bytes, device, "the activation arena of net '" + graph.name + "'");
    arenas.push_back(Tensor::wrap(block.get(), Shape{static_cast<std::int64_t>(memory.arena_bytes)}, DType::i8,
                                  device, block));
  }
  // Naive: every layer output, and every gradient, in its own buffer.
  const auto aligned = [](std::size_t bytes) { return (bytes + 63) / 64 * 64; };
  for (std::size_t id = 0; id < names.size(); ++id) {
    if (producer[id] >= 0)
      report.activation_bytes +=
          aligned(static_cast<std::size_t>(shapes[id].numel()) * dtype_size(tensor_dtype[id]));
  }
  // Naive: every output of a step that runs backward has a gradient (fused chains' inner ones too).
  for (std::size_t step = 0; options.training && step < layers.size(); ++step) {
    if (!step_runs_backward[step]) continue;
    for (int id : step_outputs[step]) {
      const auto u = static_cast<std::size_t>(id);
      report.activation_grad_bytes +=
          aligned(static_cast<std::size_t>(shapes[u].numel()) * dtype_size(tensor_dtype[u]));
    }
  }
  // Naive: converted copies and their gradients each in a buffer of their own too.
  for (const auto& [buffer, name] : named) {
    const auto b = static_cast<std::size_t>(buffer);
    if (b < workspaces_begin)
      (b < activation_buffers ? report.activation_bytes : report.activation_grad_bytes) +=
          aligned(buffers[b].bytes);
  }
  report.naive_bytes = report.activation_bytes + report.activation_grad_bytes;
  if (options.training) {
    const auto split = static_cast<std::ptrdiff_t>(activation_buffers);
    report.activation_planned_bytes =
        plan_memory(std::vector<BufferRequest>(buffers.begin(), buffers.begin() + split)).arena_bytes;
    const auto workspaces = static_cast<std::ptrdiff_t>(workspaces_begin);
    report.activation_grad_planned_bytes =
        plan_memory(std::vector<BufferRequest>(buffers.begin() + split, buffers.begin() + workspaces))
            .arena_bytes;
    for (auto b = buffers.begin() + workspaces; b != buffers.end(); ++b)
      report.arena_workspace_bytes = std::max(report.arena_workspace_bytes, b->bytes);
  }

  describe_busiest_moment(buffers, buffer_arena, buffer_of, grad_buffer_of, named);

  std::vector<std::byte*> address(buffers.size());
  for (std::size_t b = 0; b < buffers.size(); ++b) {
    address[b] =
        static_cast<std::byte*>(arenas[static_cast<std::size_t>(buffer_arena[b])].raw()) + offsets[b];
  }
  tensors.assign(names.size(), Tensor{});
  for (int id : input_ids) {
    tensors[static_cast<std::size_t>(id)] = Tensor::zeros(shapes[static_cast<std::size_t>(id)], DType::f32, options.device);
  }
  for (std::size_t id = 0; id < names.size(); ++id) {
    if (buffer_of[id] < 0) continue;
    tensors[id] = Tensor::wrap(address[static_cast<std::size_t>(buffer_of[id])], shapes[id], tensor_dtype[id],
                               tensor_device[id]);
  }
  grads.assign(names.size(), Tensor{});
  for (std::size_t id = 0; id < names.size(); ++id) {
    if (grad_buffer_of[id] < 0) continue;
    grads[id] = Tensor::wrap(address[static_cast<std::size_t>(grad_buffer_of[id])], shapes[id],
                             tensor_dtype[id], options.device);
  }
  output_casts.clear();
  for (int id : output_ids) {
    const auto index = static_cast<std::size_t>(id);
    if (tensor_dtype[index] != DType::f32 || tensor_channels_last[index]) {
      output_casts.push_back({id, Tensor::empty(shapes[index], DType::f32, tensor_device[index])});
    }
  }
  return address;
}

bool Net::Impl::reads_copy(std::size_t step, int id) const {
  const auto u = static_cast<std::size_t>(id);
  return tensor_device[u] != step_device[step] || tensor_dtype[u] != step_dtype[step] ||
         tensor_channels_last[u] != reads_channels_last(step, id);
}

void Net::Impl::connect_steps(const std::vector<PlannedCopy>& copies,
                              const std::map<CopyKey, std::size_t>& copy_of,
                              const std::vector<std::byte*>& address) {
  const auto steps = layers.size();
  step_input_views.assign(steps, {});
  step_output_views.assign(steps, {});
  step_transfers.assign(steps, {});
  // A tensor read on another device or in another type is copied and converted once, before the
  // first layer there reads it.
  std::vector<Tensor> copy_tensors;
  for (const PlannedCopy& copy : copies) {
    const Shape& shape = shapes[static_cast<std::size_t>(copy.source)];
    copy_tensors.push_back(copy.buffer >= 0 ? Tensor::wrap(address[static_cast<std::size_t>(copy.buffer)],
                                                           shape, copy.dtype, copy.device)
                                            : Tensor::empty(shape, copy.dtype, copy.device));
  }
  std::vector<bool> made(copies.size(), false);
  for (std::size_t step = 0; step < steps; ++step) {
    const Device device = step_device[step];
    for (int id : step_inputs[step]) {
      const auto index = static_cast<std::size_t>(id);
      if (!reads_copy(step, id)) {
        step_input_views[step].push_back(tensors[index]);
        continue;
      }
      const std::size_t c = copy_of.at(copy_key(step, id));
      if (!made[c]) {
        made[c] = true;
        Tensor staging;
        if (tensor_device[index] != device && tensor_dtype[index] != step_dtype[step])
          staging = Tensor::empty(shapes[index], tensor_dtype[index], device);
        step_transfers[step].push_back(
            {id, copy_tensors[c], staging, tensor_channels_last[index] != copies[c].channels_last});
      }
      step_input_views[step].push_back(copy_tensors[c]);
    }
    for (int id : step_outputs[step]) step_output_views[step].push_back(tensors[static_cast<std::size_t>(id)]);
    if (const int out = fused_output(step); out >= 0)
      step_output_views[step].push_back(tensors[static_cast<std::size_t>(out)]);
  }
}

namespace {

// What stays of a step whose work (forward, and backward when training) another kernel does.
class FusedKernel final : public Kernel {
 public:
  explicit FusedKernel(std::string into) : name_("fused into " + std::move(into)) {}
  void forward(const std::vector<Tensor>&, std::vector<Tensor>&) override {}
  void backward(const Layer&, const std::vector<Tensor>&, const std::vector<Tensor>&,
                const std::vector<Tensor>&, std::vector<Tensor>&, std::vector<Tensor>&) override {}
  bool has_fast_backward() const override { return true; }
  const char* name() const override { return name_.c_str(); }

 private:
  std::string name_;
};

// A Concat some of whose inputs were written into its output by their producers: copies the rest.
class PartialConcatKernel final : public Kernel {
 public:
  PartialConcatKernel(std::vector<bool> written, std::int64_t outer, std::vector<std::int64_t> inner)
      : written_(std::move(written)), outer_(outer), inner_(std::move(inner)) {
    std::size_t count = 0;
    for (bool w : written_) count += w ? 1 : 0;
    name_ = "concat (" + std::to_string(count) + " of " + std::to_string(written_.size()) + " inputs written in place)";
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    float* y = outputs[0].data<float>();
    std::int64_t total = 0;
    for (std::int64_t n : inner_) total += n;
    std::int64_t offset = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      if (!written_[i]) {
        const float* x = inputs[i].data<float>();
        for (std::int64_t o = 0; o < outer_; ++o)
          std::copy_n(x + o * inner_[i], inner_[i], y + o * total + offset);
      }
      offset += inner_[i];
    }
  }
  const char* name() const override { return name_.c_str(); }

 private:
  std::vector<bool> written_;
  std::int64_t outer_;
  std::vector<std::int64_t> inner_;
  std::string name_;
};

// [lo, hi] when the layer is a clamp: ReLU without a slope, clip.
bool clamp_of(const Layer& layer, float& lo, float& hi) {
  if (const auto* relu = dynamic_cast<const ReLULayer*>(&layer)) {
    if (relu->negative_slope() != 0.0f) return false;
    lo = 0.0f;
    hi = std::numeric_limits<float>::infinity();
    return true;
  }
  if (const auto* act = dynamic_cast<const ActivationLayer*>(&layer)) {
    if (act->function() != ActivationLayer::Function::clip) return false;
    lo = static_cast<float>(act->min());
    hi = static_cast<float>(act->max());
    return true;
  }
  return false;
}

}  // namespace

// The Add that alone reads `out` (made by `step`), when it adds a same-shape tensor made earlier and
// runs in place on that tensor's memory, which no step between `step` and the Add reads: `kernel`
// takes it over with Kernel::accumulate_output, and the Add becomes a no-op. Returns the Add's step,
// or -1.
int Net::Impl::fuse_residual_on_other(std::size_t step, int out, Kernel& kernel, const std::vector<int>& readers,
                                      const std::vector<int>& reader, const std::set<int>& outputs) {
  const auto uout = static_cast<std::size_t>(out);
  if (readers[uout] != 1 || outputs.count(out)) return -1;
  const int add_step = reader[uout];
  const auto ua = static_cast<std::size_t>(add_step);
  const auto* add = dynamic_cast<const BinaryLayer*>(layers[ua].get());
  if (!add || add->op() != BinaryLayer::Op::add || step_inputs[ua].size() != 2 ||
      step_device[ua] != step_device[step] || !step_transfers[ua].empty() || step_outputs[ua].size() != 1) {
    return -1;
  }
  const int other = step_inputs[ua][0] == out ? step_inputs[ua][1] : step_inputs[ua][0];
  const auto uo = static_cast<std::size_t>(other);
  const Tensor& sum = tensors[static_cast<std::size_t>(step_outputs[ua][0])];
  if (other == out || shapes[uo] != shapes[uout] || producer[uo] >= static_cast<int>(step) ||
      tensor_device[uo] != tensor_device[uout] || tensors[uo].dtype() != tensors[uout].dtype() ||
      tensor_channels_last[uo] != tensor_channels_last[uout] || sum.raw() != tensors[uo].raw() ||
      shapes[uo].rank() < 1) {
    return -1;
  }
  for (std::size_t between = step + 1; between < ua; ++between) {
    for (int id : step_inputs[between]) {
      if (id == other) return -1;
    }
  }
  const Shape& shape = shapes[uo];
  if (!kernel.accumulate_output(tensors[uo].raw(), tensors[uo].dtype(), shape.numel() / shape[0])) return -1;
  kernels[ua] = std::make_unique<FusedKernel>(layers[step]->name());
  return add_step;
}

// Inference: a kernel that can (Kernel::fuse_residual / fuse_clamp) takes over the Add and the
// ReLU/clip that alone read its output, when they run in place on its output's memory on the same
// device, so that its output is written once, final (on a GPU: one kernel launch instead of three).
// The fused steps' kernels become no-ops. Folding BatchNorms, pooling and Concats stay on the CPU.
void Net::Impl::fuse_steps() {
  const std::size_t steps = layers.size();
  std::vector<int> readers(names.size(), 0), reader(names.size(), -1);
  for (std::size_t step = 0; step < steps; ++step) {
    for (int id : step_inputs[step]) {
      ++readers[static_cast<std::size_t>(id)];
      reader[static_cast<std::size_t>(id)] = static_cast<int>(step);
    }
  }
  const std::set<int> outputs(output_ids.begin(), output_ids.end());
  // Per tensor: the step whose kernel writes its final values (its producer, or the kernel its
  // producer was fused into).
  std::vector<int> writer(producer);
  // The step that alone reads tensor `id` (a layer output, not a net output) on `device`, or -1.
  auto sole_reader = [&](int id, const Device& device) {
    const auto index = static_cast<std::size_t>(id);
    if (readers[index] != 1 || outputs.count(id)) return -1;
    const int t = reader[index];
    const auto ut = static_cast<std::size_t>(t);
    if (step_device[ut] != device || !step_transfers[ut].empty() || step_outputs[ut].size() != 1) return -1;
    // In place: the step writes where it reads, so the fused kernel's output is its output.
    if (tensors[static_cast<std::size_t>(step_outputs[ut][0])].raw() != tensors[index].raw()) return -1;
    return t;
  };
  // The step that alone reads tensor `id` (not a net output), as its first input, on `device`, or -1.
  auto sole_consumer = [&](int id, const Device& device) {
    const auto index = static_cast<std::size_t>(id);
    if (readers[index] != 1 || outputs.count(id)) return -1;
    const int t = reader[index];
    const auto ut = static_cast<std::size_t>(t);
    if (step_device[ut] != device || !step_transfers[ut].empty() || step_inputs[ut].empty() ||
        step_inputs[ut][0] != id)
      return -1;
    return t;
  };
  for (std::size_t step = 0; step < steps; ++step) {
    // A step already taken over by another kernel has nothing left to take over.
    if (step_outputs[step].size() != 1 || dynamic_cast<const FusedKernel*>(kernels[step].get())) continue;
    const Device& device = step_device[step];
    Kernel& kernel = *kernels[step];
    int out = step_outputs[step][0];
    int next = sole_reader(out, device);
    // Inference BatchNorms fold into the weights and bias.
    while (next >= 0) {
      const auto* bn = dynamic_cast<const BatchNormLayer*>(layers[static_cast<std::size_t>(next)].get());
      if (!bn || bn->batch_statistics() ||
          !kernel.fuse_channel_affine(
              {[bn](std::vector<float>& m, std::vector<float>& o) { bn->affine(m, o); }, bn->weights()})) {
        break;
      }
      kernels[static_cast<std::size_t>(next)] = std::make_unique<FusedKernel>(layers[step]->name());
      out = step_outputs[static_cast<std::size_t>(next)][0];
      writer[static_cast<std::size_t>(out)] = static_cast<int>(step);
      next = sole_reader(out, device);
    }
    if (next < 0) {
      // Residual whose Add runs in place on the other operand (MobileNetV2's blocks): the kernel
      // writes into that memory, adding to the residual there.
      next = fuse_residual_on_other(step, out, kernel, readers, reader, outputs);
      if (next < 0) continue;
      out = step_outputs[static_cast<std::size_t>(next)][0];
      writer[static_cast<std::size_t>(out)] = static_cast<int>(step);
      next = sole_reader(out, device);
      if (next < 0) continue;
    }
    const auto un = static_cast<std::size_t>(next);
    // Residual: an element-wise Add of a same-shape tensor made before this step.
    if (const auto* add = dynamic_cast<const BinaryLayer*>(layers[un].get());
        add && add->op() == BinaryLayer::Op::add && step_inputs[un].size() == 2) {
      const int other = step_inputs[un][0] == out ? step_inputs[un][1] : step_inputs[un][0];
      const auto uo = static_cast<std::size_t>(other);
      if (other == out || shapes[uo] != shapes[static_cast<std::size_t>(out)] ||
          tensor_channels_last[uo] != tensor_channels_last[static_cast<std::size_t>(out)] ||
          producer[uo] >= static_cast<int>(step) || tensor_device[uo] != device ||
          !kernel.fuse_residual(tensors[uo])) {
        continue;
      }
      kernels[un] = std::make_unique<FusedKernel>(layers[step]->name());
      out = step_outputs[un][0];
      writer[static_cast<std::size_t>(out)] = static_cast<int>(step);
      next = sole_reader(out, device);
      if (next < 0) continue;
    }
    float lo = 0.0f, hi = 0.0f;
    if (clamp_of(*layers[static_cast<std::size_t>(next)], lo, hi)) {
      // The kernel that alone reads the clip's output clamps its input itself where it can (so this one
      // writes its output with the epilogue it has), else this one clamps.
      const int clipped = step_outputs[static_cast<std::size_t>(next)][0];
      const int consumer = sole_consumer(clipped, device);
      const bool by_consumer =
          consumer >= 0 && kernels[static_cast<std::size_t>(consumer)]->fuse_input_clamp(lo, hi);
      if (by_consumer || kernel.fuse_clamp(lo, hi)) {
        const auto taker = static_cast<std::size_t>(by_consumer ? consumer : static_cast<int>(step));
        kernels[static_cast<std::size_t>(next)] = std::make_unique<FusedKernel>(layers[taker]->name());
        out = clipped;
        writer[static_cast<std::size_t>(out)] = static_cast<int>(step);
      }
    }
    fuse_max_pooling(step, out, kernel, readers, reader, outputs, writer);
  }
  // Channel Concats: inputs read by the Concat alone are written into its output by their kernels. On the
  // CPU the Concat copies the rest; on a device all are written or none (the Concat's kernel stays).
  for (std::size_t step = 0; step < steps; ++step) {
    const auto* concat = dynamic_cast<const ConcatLayer*>(layers[step].get());
    if (!concat || !step_transfers[step].empty() || step_outputs[step].size() != 1) continue;
    const Device& device = step_device[step];
    const int out = step_outputs[step][0];
    if (tensors[static_cast<std::size_t>(out)].dtype() != DType::f32) continue;
    const Shape& shape = shapes[static_cast<std::size_t>(out)];
    const std::int64_t axis = concat->axis() < 0 ? concat->axis() + shape.rank() : concat->axis();
    if (axis != 1 || concat_starts[static_cast<std::size_t>(out)] < 0) continue;
    std::int64_t outer = shape[0], spatial = 1;
    for (int a = 2; a < shape.rank(); ++a) spatial *= shape[a];
    float* base = tensors[static_cast<std::size_t>(out)].data<float>();
    std::vector<bool> written;
    std::vector<std::int64_t> inner;
    std::vector<int> writers;  // the kernels that took their slice
    std::int64_t offset = 0;
    for (int id : step_inputs[step]) {
      const auto u = static_cast<std::size_t>(id);
      const std::int64_t slice = shapes[u][1] * spatial;
      const int w = writer[u];
      // The writer must run after the output's buffer is reserved, and nothing else may read the input.
      const bool ok =
          readers[u] == 1 && !outputs.count(id) && w >= concat_starts[static_cast<std::size_t>(out)] &&
          w < static_cast<int>(step) && step_device[static_cast<std::size_t>(w)] == device &&
          kernels[static_cast<std::size_t>(w)]->redirect_output(base + offset, shape[1] * spatial);
      if (ok) writers.push_back(w);
      if (!ok && !device.is_cpu()) {
        for (int taken : writers) kernels[static_cast<std::size_t>(taken)]->redirect_output(nullptr, 0);
        writers.clear();
        break;
      }
      written.push_back(ok);
      inner.push_back(slice);
      offset += slice;
    }
    if (writers.empty()) continue;
    if (device.is_cpu()) {
      kernels[step] = std::make_unique<PartialConcatKernel>(std::move(written), outer, std::move(inner));
    } else {
      std::string names;
      for (int w : writers)
        names += (names.empty() ? "" : ", ") + layers[static_cast<std::size_t>(w)]->name();
      kernels[step] = std::make_unique<FusedKernel>(names);
    }
  }
}

int Net::Impl::fused_output(std::size_t step) const {
  const auto& absorbed = step_absorbs[step];
  return absorbed.empty() ? -1 : step_outputs[static_cast<std::size_t>(absorbed.back())][0];
}

// Training on a device: a batch-statistics BatchNorm whose output only a per-channel Scale reads, and
// that Scale's output only a ReLU without slope (optional), run as the BatchNorm's kernel
// (Kernel::fuse_training_scale) when it can; the other steps' kernels become no-ops. ResNet's
// BatchNorm + Scale + ReLU triples: 5 passes over memory instead of 9. Decided before the memory plan,
// which keeps the last step's output from the BatchNorm's step on and its gradient until the
// BatchNorm's backward, and gives the tensors in between no gradient.
void Net::Impl::fuse_training_steps(const std::vector<int>& reads,
                                    const std::vector<float>& tensor_loss_weight) {
  std::vector<int> reader(names.size(), -1);
  for (std::size_t step = 0; step < layers.size(); ++step) {
    for (int id : step_inputs[step]) reader[static_cast<std::size_t>(id)] = static_cast<int>(step);
  }
  const std::set<int> outputs(output_ids.begin(), output_ids.end());
  // The step that alone reads `id` (made by `step`), with one input and one output, in step's type on its
  // device; -1 when there is none or something else needs the tensor.
  const auto sole_reader = [&](int id, std::size_t step) {
    const auto u = static_cast<std::size_t>(id);
    if (reads[u] != 1 || outputs.count(id) || tensor_loss_weight[u] != 0.0f) return -1;
    const auto next = static_cast<std::size_t>(reader[u]);
    if (step_device[next] != step_device[step] || step_dtype[next] != step_dtype[step] ||
        step_inputs[next].size() != 1 || step_outputs[next].size() != 1)
      return -1;
    return reader[u];
  };
  for (std::size_t step = 0; step < layers.size(); ++step) {
    const auto* bn = dynamic_cast<const BatchNormLayer*>(layers[step].get());
    if (!bn || !bn->batch_statistics() || step_outputs[step].size() != 1) continue;
    const int out = step_outputs[step][0];
    const int scale_step = sole_reader(out, step);
    if (scale_step < 0) continue;
    const auto us = static_cast<std::size_t>(scale_step);
    const auto* scale = dynamic_cast<const ScaleLayer*>(layers[us].get());
    const Shape& shape = shapes[static_cast<std::size_t>(out)];
    if (!scale || shape.rank() < 2) continue;
    const AxisSplit split = scale->split({shape});
    if (split.channels != shape[1] || split.inner != shape.count(2)) continue;
    // A shared weight's gradient must be complete when its owner's backward reports it (data parallel).
    const std::vector<ParamSpec>& param_specs = layers[us]->spec().params;
    if (std::any_of(param_specs.begin(), param_specs.end(),
                    [](const ParamSpec& p) { return !p.name.empty(); }))
      continue;
    const int relu_step = sole_reader(step_outputs[us][0], us);
    const auto* relu = relu_step >= 0
                           ? dynamic_cast<const ReLULayer*>(layers[static_cast<std::size_t>(relu_step)].get())
                           : nullptr;
    Kernel::TrainingScale fused;
    const std::vector<Tensor>& weights = layers[us]->weights();
    fused.scale = weights.front();
    fused.scale_grad = weight_grads[us].front();
    if (scale->has_bias()) {
      fused.bias = weights.back();
      fused.bias_grad = weight_grads[us].back();
    }
    fused.relu = relu != nullptr && relu->negative_slope() == 0.0f;
    if (!kernels[step]->fuse_training_scale(fused)) continue;
    step_absorbs[step] = {scale_step};
    if (fused.relu) step_absorbs[step].push_back(relu_step);
    for (int absorbed : step_absorbs[step]) {
      kernels[static_cast<std::size_t>(absorbed)] = std::make_unique<FusedKernel>(layers[step]->name());
      fused_into[static_cast<std::size_t>(absorbed)] = static_cast<int>(step);
    }
  }
}

// A max Pooling that alone reads `out` (what step's kernel writes last) is made by that kernel as it
// writes: it pools band by band into the pooling's output and never writes `out`. The pooling's output
// must not lie in memory the step still reads: the planner, which placed it for the pooling's step,
// may have given it the memory of the step's inputs (dead by then).
void Net::Impl::fuse_max_pooling(std::size_t step, int out, Kernel& kernel, const std::vector<int>& readers,
                                 const std::vector<int>& reader, const std::set<int>& outputs,
                                 std::vector<int>& writer) {
  const auto uo = static_cast<std::size_t>(out);
  if (readers[uo] != 1 || outputs.count(out)) return;
  const auto pool_step = static_cast<std::size_t>(reader[uo]);
  const auto* pooling = dynamic_cast<const PoolingLayer*>(layers[pool_step].get());
  if (!pooling || pooling->method() != PoolMethod::max || !step_device[pool_step].is_cpu() ||
      !step_transfers[pool_step].empty() || step_outputs[pool_step].size() != 1) {
    return;
  }
  const int pooled = step_outputs[pool_step][0];
  const Tensor& target = tensors[static_cast<std::size_t>(pooled)];
  const auto* begin = static_cast<const std::byte*>(target.raw());
  for (const Tensor& input : step_input_views[step]) {  // what the kernel reads: copies where converted
    const auto* from = static_cast<const std::byte*>(input.raw());
    if (from < begin + target.bytes() && begin < from + input.bytes()) return;
  }
  if (!kernel.fuse_max_pooling(pooling->geometry(shapes[uo]), tensors[static_cast<std::size_t>(pooled)].data<float>()))
    return;
  kernels[pool_step] = std::make_unique<FusedKernel>(layers[step]->name());
  writer[static_cast<std::size_t>(pooled)] = static_cast<int>(step);
}

void Net::Impl::share_weights() {
  // Caffe's `param { name }`: later layers use the first layer's blob, so one update moves both.
  // On a GPU the weights move there for good: the solver updates them in place.
  // Later users of a shared blob, which take their owner's weight and gradient below.
  std::set<std::string> named;
  std::vector<std::vector<bool>> borrowed(layers.size());
  for (std::size_t step = 0; step < layers.size(); ++step) {
    const std::vector<ParamSpec>& specs = layers[step]->spec().params;
    for (std::size_t i = 0; i < layers[step]->weights().size(); ++i)
      borrowed[step].push_back(i < specs.size() && !specs[i].name.empty() &&
                               !named.insert(specs[i].name).second);
  }
  move_weights_to_device(borrowed);
  make_weight_gradients(borrowed);
  std::map<std::string, std::pair<std::size_t, std::size_t>> owner;  // name -> (step, weight)
  params.clear();
  for (std::size_t step = 0; step < layers.size(); ++step) {
    Layer& layer = *layers[step];
    std::vector<Tensor>& weights = layer.weights();
    std::vector<Tensor>& grads_of_step = weight_grads[step];
    for (std::size_t i = 0; i < weights.size(); ++i) {
      ParamSpec spec = i < layer.spec().params.size() ? layer.spec().params[i] : ParamSpec{};
      if (!layer.learned_weight(i)) spec.lr_mult = spec.decay_mult = 0.0f;
      if (!spec.name.empty()) {
        auto [it, first] = owner.try_emplace(spec.name, step, i);
        if (!first) {
          const auto [owner_step, owner_index] = it->second;
          const Tensor& shared = layers[owner_step]->weights()[owner_index];
          if (shared.shape() != weights[i].shape()) {
            throw ModelError("layer '" + layer.name() + "' (" + layer.type() + "): shared parameter '" +
                             spec.name + "' has shape " + weights[i].shape().str() + " here but " +
                             shared.shape().str() + " in layer '" + layers[owner_step]->name() + "'");
          }
          weights[i] = shared;
          grads_of_step[i] = weight_grads[owner_step][owner_index];
          continue;
        }
      }
      params.push_back({layer.name(), static_cast<int>(i), weights[i], grads_of_step[i], spec});
    }
  }
}

void Net::Impl::move_weights_to_device(const std::vector<std::vector<bool>>& borrowed) {
  std::vector<Tensor*> moving;
  std::vector<Shape> shapes;
  for (std::size_t step = 0; step < layers.size(); ++step) {
    for (std::size_t i = 0; i < layers[step]->weights().size(); ++i) {
      Tensor& weight = layers[step]->weights()[i];
      if (borrowed[step][i] || weight.device() == options.device) continue;
      if (weight.dtype() != DType::f32) {
        weight = weight.to(options.device);
        continue;
      }
      moving.push_back(&weight);
      shapes.push_back(weight.shape());
    }
  }
  std::vector<Tensor> moved =
      packed_zeros(shapes, DType::f32, options.device, "the weights of net '" + graph.name + "'");
  for (std::size_t k = 0; k < moving.size(); ++k) {
    moved[k].copy_from(*moving[k]);
    *moving[k] = moved[k];
  }
}

void Net::Impl::make_weight_gradients(const std::vector<std::vector<bool>>& borrowed) {
  // Kept across re-planning (a solver may hold these views); missing ones made in one block.
  weight_grads.resize(layers.size());
  std::vector<Tensor*> missing;
  std::vector<Shape> shapes;
  for (std::size_t step = 0; step < layers.size(); ++step) {
    const std::vector<Tensor>& weights = layers[step]->weights();
    std::vector<Tensor>& grads_of_step = weight_grads[step];
    grads_of_step.resize(weights.size());
    for (std::size_t i = 0; i < weights.size(); ++i) {
      if (borrowed[step][i]) continue;
      if (grads_of_step[i].defined() && grads_of_step[i].shape() == weights[i].shape()) continue;
      missing.push_back(&grads_of_step[i]);
      shapes.push_back(weights[i].shape());
    }
  }
  std::vector<Tensor> made =
      packed_zeros(shapes, DType::f32, options.device, "the weight gradients of net '" + graph.name + "'");
  for (std::size_t k = 0; k < missing.size(); ++k) *missing[k] = made[k];
}

void Net::Impl::decide_gradients() {
  // A tensor carries a gradient when the loss reads it, or a layer that runs backward reads it
  // through a differentiable input. Consumers come after producers, so one reverse sweep decides.
  carries.assign(names.size(), false);
  for (std::size_t step = 0; step < layers.size(); ++step) {
    for (std::size_t k = 0; k < step_outputs[step].size(); ++k) {
      if (loss_weights[step][k] != 0.0f) carries[static_cast<std::size_t>(step_outputs[step][k])] = true;
    }
  }
  step_runs_backward.assign(layers.size(), false);
  for (std::size_t step = layers.size(); step-- > 0;) {
    const auto& out = step_outputs[step];
    if (std::none_of(out.begin(), out.end(), [&](int id) { return carries[static_cast<std::size_t>(id)]; })) {
      continue;
    }
    step_runs_backward[step] = true;
    const auto& in = step_inputs[step];
    for (std::size_t k = 0; k < in.size(); ++k) {
      const auto id = static_cast<std::size_t>(in[k]);
      if (producer[id] >= 0 && layers[step]->differentiable_input(k)) carries[id] = true;
    }
  }
}

void Net::Impl::plan_gradients(const std::vector<int>& grad_fill_step,
                               const std::vector<float>& tensor_loss_weight,
                               const std::vector<std::vector<int>>& grad_cast_buffer,
                               const std::vector<std::byte*>& address) {
  // Every output of a step that runs backward has a gradient buffer (zeros where nothing flows), so
  // layers never see an undefined output gradient; place_tensors put them in the arena. Each is set to
  // its loss weight (or zero) just before the first backward step that adds into it.
  grad_fills.assign(layers.size(), {});
  for (std::size_t id = 0; id < names.size(); ++id) {
    if (grad_fill_step[id] >= 0)
      grad_fills[static_cast<std::size_t>(grad_fill_step[id])].push_back({grads[id], tensor_loss_weight[id]});
  }
  if (!options.device.is_cpu()) {
    // A kernel without its own backward would run the CPU reference on device memory.
    std::string missing;
    for (std::size_t step = 0; step < layers.size(); ++step) {
      if (step_runs_backward[step] && !kernels[step]->has_fast_backward()) {
        missing += (missing.empty() ? "" : ", ") +
                   ("'" + layers[step]->name() + "' (" + layers[step]->type() + ")");
      }
    }
    if (!missing.empty()) {
      throw UnsupportedError("no " + display_name(*backend) + " backward for layers " + missing + " of net '" +
                             graph.name + "'; train it on the CPU");
    }
  }
  step_input_grads.assign(layers.size(), {});
  step_output_grads.assign(layers.size(), {});
  step_grad_casts.assign(layers.size(), {});
  for (std::size_t step = 0; step < layers.size(); ++step) {
    for (std::size_t k = 0; k < step_inputs[step].size(); ++k) {
      const auto id = static_cast<std::size_t>(step_inputs[step][k]);
      Tensor grad = carries[id] && layers[step]->differentiable_input(k) ? grads[id] : Tensor{};
      if (const int buffer = grad_cast_buffer[step][k]; buffer >= 0) {
        Tensor converted = Tensor::wrap(address[static_cast<std::size_t>(buffer)], shapes[id],
                                        step_dtype[step], options.device);
        step_grad_casts[step].push_back({converted, grad});
        grad = converted;
      }
      step_input_grads[step].push_back(grad);
    }
    for (int id : step_outputs[step]) step_output_grads[step].push_back(grads[static_cast<std::size_t>(id)]);
    if (const int out = fused_output(step); out >= 0)
      step_output_grads[step].push_back(grads[static_cast<std::size_t>(out)]);
  }
}

void Net::Impl::plan_overflow_check() {
  overflow_flags = Tensor{};
  overflow_checked.clear();
  if (options.precision != Precision::fp16 || params.empty()) return;  // bf16 has fp32's range
  overflow_flags = Tensor::zeros(Shape{static_cast<std::int64_t>(params.size())}, DType::i32, options.device);
  for (const Parameter& p : params) overflow_checked.push_back(p.grad);
}

void Net::Impl::require_training(const char* what) const {
  if (!options.training) {
    throw UnsupportedError(std::string(what) + " needs a Net created with NetOptions::training (net '" +
                           graph.name + "')");
  }
}

template <typename Run>
void Net::Impl::timed(std::vector<StepTime>& times, std::size_t step, Run&& run) {
  Stream& step_stream = stream_for(step_device[step]);
  step_stream.synchronize();
  const auto start = std::chrono::steady_clock::now();
  run();
  step_stream.synchronize();
  times.resize(kernels.size());
  StepTime& time = times[step];
  if (!time.first_seen) {
    time.first_seen = true;
    return;
  }
  time.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++time.calls;
}

void Net::Impl::run_backward() {
  queue_backward();
  try {
    stream->synchronize();
  } catch (const DeviceError& e) {
    rethrow_device_error(e, "backward of net '" + graph.name + "' on " + options.device.str() + ": ",
                         " (set CUDA_LAUNCH_BLOCKING=1 to find the layer)");
  }
}

void Net::Impl::queue_backward() {
  for (Parameter& p : params) {
    if (p.grad.numel() != 0) stream->fill(p.grad, 0.0f);
  }
  for (std::size_t step = layers.size(); step-- > 0;) {
    for (auto& [gradient, value] : grad_fills[step]) {
      if (gradient.numel() != 0) stream->fill(gradient, value * loss_scale);
    }
    for (GradientCast& cast : step_grad_casts[step]) stream->fill(cast.converted, 0.0f);
    if (step_runs_backward[step]) {
      const Lending lending(*stream, backward_workspace[step]);
      try {
        const auto run = [&] {
          kernels[step]->backward(*layers[step], step_input_views[step], step_output_views[step],
                                  step_output_grads[step], step_input_grads[step], weight_grads[step]);
        };
        if (profile_layers) {
          timed(backward_time, step, run);
        } else {
          run();
        }
      } catch (const DeviceError& e) {
        rethrow_device_error(
            e, "backward of layer '" + layers[step]->name() + "' (" + layers[step]->type() + "): ");
      }
    }
    for (GradientCast& cast : step_grad_casts[step]) stream->add_converted(cast.converted, cast.target);
    // A fused step's gradients are complete once the step that absorbed it ran.
    if (backward_observer && fused_into[step] < 0) {
      backward_observer(layers[step]->name());
      for (int absorbed : step_absorbs[step])
        backward_observer(layers[static_cast<std::size_t>(absorbed)]->name());
    }
  }
  if (overflow_flags.defined()) {
    stream->fill(overflow_flags, 0.0f);
    stream->flag_non_finite(overflow_checked, overflow_flags);
  }
}

bool Net::Impl::can_capture_training() const {
  return options.cuda_graphs && stream->can_capture() && !options.stateful && fallbacks.empty() &&
         !profile_layers && !backward_observer && !recording_failed;
}

// Queues `work` on the net's stream and waits for it: recorded as one graph (CUDA graph, Vulkan command
// buffer) when `record` and it ran plainly once since planning (`ran_plain`: libraries set up, algorithms
// timed, workspaces reserved), replayed after that; else run plainly. A recording that fails with a device
// error (out of memory, say) is dropped with a warning and the net runs unrecorded from then on. Device
// errors of the work are named after `what`.
void Net::Impl::run_recorded(const std::function<void()>& work, bool record, bool& ran_plain,
                             const std::string& what) {
  Stream& context = *stream;
  record = record && ran_plain && !recording_failed;
  if (record && !context.has_capture()) {
    context.begin_capture();
    try {
      work();
      context.end_capture();
    } catch (const DeviceError& e) {
      context.abort_capture();
      context.drop_capture();
      recording_failed = true;
      record = false;
      std::fprintf(stderr, "espresso: %s: recording it as a graph failed (%s); running it unrecorded\n",
                   what.c_str(), e.what());
    } catch (...) {
      context.abort_capture();
      throw;
    }
  }
  context.mark_start();
  if (record) {
    context.replay();
  } else {
    work();
    ran_plain = true;
  }
  context.mark_end();
  try {
    context.synchronize();
  } catch (const DeviceError& e) {
    rethrow_device_error(
        e, what + " on " + options.device.str() + ": ",
        record ? " (create the Net with cuda_graphs off and set CUDA_LAUNCH_BLOCKING=1 to find the layer)"
               : " (set CUDA_LAUNCH_BLOCKING=1 to find the layer)");
  }
  last_forward_ms = context.elapsed_ms();
  for (auto& kernel : kernels) kernel->check_completed();
}

std::string Net::Impl::display_name(const Backend& backend) {
  std::string name = backend.name();
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

Stream& Net::Impl::stream_for(Device device) {
  if (device == options.device) return *stream;
  if (!host_stream) host_stream = backend_for(Device::cpu()).create_stream(Device::cpu(), nullptr);
  return *host_stream;
}

DType Net::Impl::low_precision_dtype() const {
  switch (options.precision) {
    case Precision::fp16:
      return DType::f16;
    case Precision::bf16:
      return DType::bf16;
    case Precision::fp32:
    case Precision::tf32:
    case Precision::int8:  // computes in integers, stores fp32
      break;
  }
  return DType::f32;
}

// Measured on an H100 in fp16 (bench/results/2026-12-07-h100-channels-last.md), channels-last against N, C,
// H, W: ResNet-18, SqueezeNet and NIN faster or even at every batch size; MobileNetV2 faster at batch 64 and
// 256 (6.2 against 9.9 ms) but slower at batch 1 (0.41 against 0.29), and in bf16 slower than its fp16 plan
// at batch 64 (8.6 against 1.6 ms; 2.9 N, C, H, W: cuDNN's bf16 depthwise kernels on N, H, W, C ran 5x
// slower). So nets with grouped convolutions stay N, C, H, W at batch 1 and in bf16; bf16 otherwise follows
// fp16. ESPRESSO_CHANNELS_LAST=1 asks for channels-last wherever a plan can have it, 0 never.
bool Net::Impl::channels_last_pays() const {
  const char* env = std::getenv("ESPRESSO_CHANNELS_LAST");
  const std::string setting = env != nullptr ? env : "";
  if (setting == "0" || setting == "1") return setting == "1";
  for (std::size_t step = 0; step < layers.size(); ++step) {
    const Layer& layer = *layers[step];
    if (layer.type() != "Convolution" || layer.spec().attrs.get_int("group", 1) <= 1) continue;
    const Shape& input = shapes[static_cast<std::size_t>(step_inputs[step][0])];
    const std::int64_t batch = input.rank() > 0 ? input[0] : 1;
    if (batch <= 1 || options.precision == Precision::bf16) return false;
  }
  return true;
}

void Net::Impl::make_kernels() {
  // Placement: each layer on the net's device where its backend supports it, else on the CPU, whose
  // reference kernels run every layer. Precision: in the net's low precision where the device has a
  // kernel in it (one with a backward when training) and the layer is not one that stays fp32, else fp32.
  kernels.clear();
  fallbacks.clear();
  step_device.assign(layers.size(), options.device);
  step_dtype.assign(layers.size(), DType::f32);
  step_channels_last.assign(layers.size(), false);
  step_precision.assign(layers.size(), "fp32");
  step_precision_note.assign(layers.size(), "");
  const DType low = low_precision_dtype();
  // Channels-last where the backend has the kernels: fp16/bf16 tensor cores work in N, H, W, C, and
  // convolutions handed N, C, H, W transpose around each call. Inference plans only (a naive plan keeps its
  // tensors readable as they are), and not where it measured slower (channels_last_pays).
  const bool try_channels_last = low != DType::f32 && !options.training && !options.keep_intermediates &&
                                 !options.reference_kernels && !channels_last_declined &&
                                 channels_last_pays();
  std::string precision_fallbacks;
  // Training: the workspaces the kernels reserve go into the memory plan. Inference nets keep the stream's
  // shared one for now, and so does the naive plan (keep_intermediates), as Caffe holds one.
  step_workspace_request.assign(layers.size(), 0);
  struct PlanningWorkspaces {
    Stream* stream;
    explicit PlanningWorkspaces(Stream* s) : stream(s) {
      if (stream) stream->plan_workspaces(true);
    }
    ~PlanningWorkspaces() {
      if (stream) stream->plan_workspaces(false);
    }
  } planning(options.training && !options.keep_intermediates ? stream.get() : nullptr);
  for (std::size_t step = 0; step < layers.size(); ++step) {
    const Layer& layer = *layers[step];
    std::vector<Shape> in_shapes;
    for (int id : step_inputs[step]) in_shapes.push_back(shapes[static_cast<std::size_t>(id)]);
    std::unique_ptr<Kernel> kernel;
    std::string& note = step_precision_note[step];
    const bool products_only = options.precision == Precision::tf32 || options.precision == Precision::int8;
    const bool wants_low = options.precision != Precision::fp32 && (products_only ? uses_tf32(layer.type()) : true);
    bool int8 = layer.type() == "QuantizedConvolution";
    if (wants_low && stays_fp32(layer.type())) note = "kept";
    try {
      if (options.reference_kernels) {
        kernel = std::make_unique<ReferenceKernel>(layer);
      } else {
        if (options.precision == Precision::int8 && wants_low && backend->supports(layer, in_shapes, DType::i8)) {
          kernel = backend->make_typed_kernel(layer, in_shapes, DType::i8, *stream);
          int8 = kernel != nullptr;
        }
        if (low != DType::f32 && note.empty() && backend->supports(layer, in_shapes, low)) {
          const auto sensitive = [&](int id) {
            return layout_sensitive(shapes[static_cast<std::size_t>(id)]);
          };
          if (try_channels_last &&
              (std::any_of(step_inputs[step].begin(), step_inputs[step].end(), sensitive) ||
               std::any_of(step_outputs[step].begin(), step_outputs[step].end(), sensitive))) {
            kernel = backend->make_channels_last_kernel(layer, in_shapes, low, *stream);
            step_channels_last[step] = kernel != nullptr;
          }
          if (!kernel) kernel = backend->make_typed_kernel(layer, in_shapes, low, *stream);
          // Mixed precision training: a kernel without its own backward in that type trains in fp32.
          if (kernel && options.training && !kernel->has_fast_backward()) kernel.reset();
          if (kernel) step_dtype[step] = low;
        }
        if (!kernel && backend->supports(layer, in_shapes, DType::f32)) {
          kernel = backend->make_kernel(layer, in_shapes, *stream);
        }
      }
    } catch (const DeviceError& e) {
      rethrow_device_error(e, "layer '" + layer.name() + "' (" + layer.type() + "): ");
    }
    if (!kernel) {
      step_device[step] = Device::cpu();
      kernel = backend_for(Device::cpu()).make_kernel(layer, in_shapes, stream_for(Device::cpu()));
      fallbacks.push_back("'" + layer.name() + "' (" + layer.type() + ", inputs " + join_shapes(in_shapes) + ")");
    }
    if (int8) {
      step_precision[step] = "int8";
    } else if (step_dtype[step] != DType::f32) {
      step_precision[step] = precision_name(options.precision);
    } else if (options.precision == Precision::tf32 && tf32 && wants_low &&
               step_device[step] == options.device && !options.reference_kernels) {
      step_precision[step] = "tf32";
    } else if (wants_low && note.empty()) {
      note = "fallback";
      precision_fallbacks +=
          (precision_fallbacks.empty() ? "" : ", ") + ("'" + layer.name() + "' (" + layer.type() + ")");
    }
    if (options.stateful) kernel->bind_state(&carried[step]);
    step_workspace_request[step] = stream->take_workspace_request();
    kernels.push_back(std::move(kernel));
  }
  if (!fallbacks.empty() &&
      std::find(step_channels_last.begin(), step_channels_last.end(), true) != step_channels_last.end()) {
    // CPU steps read what they are given as it is: plan again without channels-last kernels.
    channels_last_declined = true;
    make_kernels();
    return;
  }
  if (options.strict_precision && !precision_fallbacks.empty()) {
    kernels.clear();
    throw UnsupportedError("net '" + graph.name + "' on " + options.device.str() + ": no " +
                           precision_name(options.precision) + " kernel for layers " + precision_fallbacks +
                           " (strict precision; without it they run in fp32)");
  }
  if (options.training && !fallbacks.empty()) {
    kernels.clear();
    std::string list;
    for (const std::string& f : fallbacks) list += (list.empty() ? "" : ", ") + f;
    throw UnsupportedError("no " + display_name(*backend) + " kernel for layers " + list + " of net '" +
                           graph.name + "', and training cannot move layers to the CPU; train it on the CPU");
  }
}

void Net::Impl::run_steps() {
  // Mixed precision training: the kernels' low-precision weight copies follow the solver's fp32 weights.
  if (options.training && low_precision_dtype() != DType::f32) stream->refresh_converted_weights();
  for (std::size_t step = 0; step < kernels.size(); ++step) {
    try {
      for (Transfer& transfer : step_transfers[step]) {
        const auto source = static_cast<std::size_t>(transfer.source);
        Stream& target = stream_for(step_device[step]);
        if (transfer.relayout) {
          target.convert_layout(tensors[source], transfer.copy, !tensor_channels_last[source]);
          continue;
        }
        if (tensor_device[source] == step_device[step]) {
          target.convert(tensors[source], transfer.copy);
          continue;
        }
        stream_for(tensor_device[source]).synchronize();
        if (tensors[source].dtype() != transfer.copy.dtype()) {
          transfer.staging.copy_from(tensors[source]);
          target.convert(transfer.staging, transfer.copy);
        } else {
          transfer.copy.copy_from(tensors[source]);
        }
      }
      const Lending lending(*stream, forward_workspace[step]);  // none outside training
      if (profile_layers) {
        timed(forward_time, step, [&] { kernels[step]->forward(step_input_views[step], step_output_views[step]); });
      } else {
        kernels[step]->forward(step_input_views[step], step_output_views[step]);
      }
    } catch (const DeviceError& e) {
      const Layer& layer = *layers[step];
      rethrow_device_error(e, "layer '" + layer.name() + "' (" + layer.type() + "): ");
    }
  }
  for (OutputCast& cast : output_casts) {
    const auto id = static_cast<std::size_t>(cast.id);
    if (tensor_channels_last[id]) {
      stream_for(tensor_device[id]).convert_layout(tensors[id], cast.value, false);
    } else {
      stream_for(tensor_device[id]).convert(tensors[id], cast.value);
    }
  }
}

void Net::Impl::run() {
  if (!lanes_decided) decide_lanes();
  if (lanes) {
    run_recorded([this] { run_lanes(*lanes); }, false, ran_uncaptured, "running net '" + graph.name + "'");
    return;
  }
  // Training forwards alone are never recorded (forward_backward() records whole steps); nor is a net
  // with layers on the CPU, whose work a device recording cannot hold, nor a stateful one, whose
  // recurrent kernels copy the carried states to and from the host around each run.
  const bool record = options.cuda_graphs && stream->can_capture() && !options.training &&
                      !options.stateful && fallbacks.empty();
  run_recorded([this] { run_steps(); }, record, ran_uncaptured, "running net '" + graph.name + "'");
}

// Lanes pay where each image's work is large enough that its activations outgrow a core's caches, not for
// small nets (LeNet is 2.3 M multiply-adds an image; NIN, the smallest net that gained, 223 M).
constexpr std::int64_t kMinLaneMacsPerImage = 20'000'000;

// Layers known to compute each image from that image alone, given the batch on axis 0 of every tensor
// (those along an axis: not along axis 0). Lanes split the batch only where every layer is one of them:
// a recurrent layer's time-major axis 0, or a softmax over it, would look the same to the shapes.
bool per_image(const Layer& layer, int rank) {
  static const std::set<std::string> spatial_or_elementwise = {
      "Convolution", "Deconvolution", "QuantizedConvolution",
      "Pooling",     "ReLU",          "PReLU",
      "Activation",  "Dropout",       "BatchNorm",
      "LRN",         "Normalize",     "Split",
      "Binary",      "Pad",           "Resize",
      "Reshape",     "Flatten"};
  static const std::set<std::string> along_an_axis = {"Concat",       "Slice", "Softmax", "LogSoftmax",
                                                      "InnerProduct", "Scale", "Bias"};
  if (spatial_or_elementwise.count(layer.type()) != 0) return true;
  if (along_an_axis.count(layer.type()) == 0) return false;
  const std::int64_t axis = layer.spec().attrs.get_int("axis", 1);
  return (axis < 0 ? axis + rank : axis) != 0;
}

bool Net::Impl::lanes_eligible(int threads, bool forced) const {
  const std::int64_t batch = shapes[static_cast<std::size_t>(input_ids[0])].rank() > 0
                                 ? shapes[static_cast<std::size_t>(input_ids[0])][0]
                                 : 0;
  if (threads < 2 || batch < threads || batch % threads != 0) return false;
  // Every tensor keeps the batch on axis 0, every layer computes image by image, and no BatchNorm
  // normalises by the batch's own statistics (which a lane's share would change).
  for (const Shape& shape : shapes) {
    if (shape.rank() == 0 || shape[0] != batch) return false;
  }
  for (std::size_t step = 0; step < layers.size(); ++step) {
    const Layer& layer = *layers[step];
    const int rank =
        step_inputs[step].empty() ? 0 : shapes[static_cast<std::size_t>(step_inputs[step][0])].rank();
    if (!per_image(layer, rank)) return false;
    const auto* bn = dynamic_cast<const BatchNormLayer*>(&layer);
    if (bn != nullptr && bn->batch_statistics()) return false;
  }
  std::int64_t macs = 0;
  for (const std::int64_t m : step_macs) macs += m;
  return forced || macs / batch >= kMinLaneMacsPerImage;
}

std::unique_ptr<ImageLanes> Net::Impl::make_lanes(int threads, std::int64_t micro) const {
  std::vector<std::pair<std::string, Shape>> inputs;
  for (int id : input_ids)
    inputs.emplace_back(names[static_cast<std::size_t>(id)], shapes[static_cast<std::size_t>(id)]);
  return std::make_unique<ImageLanes>(graph, options, inputs, threads, micro);
}

void Net::Impl::run_lanes(ImageLanes& runner) {
  std::vector<const Tensor*> in;
  std::vector<Tensor*> out;
  for (int id : input_ids) in.push_back(&tensors[static_cast<std::size_t>(id)]);
  for (int id : output_ids) out.push_back(&tensors[static_cast<std::size_t>(id)]);
  runner.forward(in, out);
}

void Net::Impl::decide_lanes() {
  lanes_decided = true;
  if (!options.device.is_cpu() || options.training || options.stateful || options.keep_intermediates ||
      options.reference_kernels || input_ids.empty()) {
    return;
  }
  const char* env = std::getenv("ESPRESSO_IMAGE_LANES");  // 0: never; 1: always (tests), micro-batch timed
  const std::string setting = env != nullptr ? env : "";
  const int threads = num_threads();
  if (setting == "0" || !lanes_eligible(threads, setting == "1")) return;
  const std::int64_t share = shapes[static_cast<std::size_t>(input_ids[0])][0] / threads;
  // The cache's key: what the timing depends on, the processor, instruction set and threads as for the
  // convolution tactics, then the graph, its input shapes and the precision.
  std::string fingerprint = graph.name + "/" + precision_name(options.precision);
  for (const auto& layer : layers) fingerprint += "/" + layer->type() + ":" + layer->name();
  for (int id : input_ids) fingerprint += "/" + shapes[static_cast<std::size_t>(id)].str();
  const std::string key = cpu::tactic_context() + "|lanes/" +
                          std::to_string(std::hash<std::string>{}(fingerprint)) + "/" +
                          std::to_string(setting == "1");
  TacticCache& cache = tactic_cache("cpu-image-lanes.txt");
  // A lane net that cannot be made or run (a Reshape to a literal batch, memory) leaves the layer-wise plan.
  const auto try_lanes = [&](std::int64_t micro) -> std::unique_ptr<ImageLanes> {
    try {
      return make_lanes(threads, micro);
    } catch (const Error&) {
    } catch (const std::bad_alloc&) {
    }
    return nullptr;
  };
  if (const std::optional<std::string> known = cache.find(key)) {
    const std::int64_t micro = std::atoll(known->c_str());
    if (micro == 0) return;
    if (micro > 0 && share % micro == 0) {
      lanes = try_lanes(micro);
      return;
    }
  }
  // Best of two timed runs after a warm one.
  const auto best_ms = [](const std::function<void()>& work) {
    work();
    double best = 0.0;
    for (int run = 0; run < 2; ++run) {
      const auto start = std::chrono::steady_clock::now();
      work();
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      best = run == 0 ? ms : std::min(best, ms);
    }
    return best;
  };
  std::int64_t chosen = 0;
  double fastest =
      setting == "1" ? std::numeric_limits<double>::infinity() : best_ms([this] { run_steps(); });
  // Micro-batches of 1, 2, 4, ... images and the whole share: a larger one reads each packed weight once
  // for more images (ResNet-18's layers stream megabytes of them), a smaller one keeps its activations in
  // cache (MobileNetV2's expansions hold 4.8 MB an image).
  std::vector<std::int64_t> micros;
  for (std::int64_t micro = 1; micro < share && share % micro == 0; micro *= 2) micros.push_back(micro);
  micros.push_back(share);
  for (const std::int64_t micro : micros) {
    std::unique_ptr<ImageLanes> candidate = try_lanes(micro);
    if (!candidate) break;
    double ms = 0.0;
    try {
      ms = best_ms([&] { run_lanes(*candidate); });
    } catch (const Error&) {
      break;
    }
    if (ms < fastest) {
      fastest = ms;
      chosen = micro;
      lanes = std::move(candidate);
    }
  }
  cache.store(key, std::to_string(chosen));
}

Net::Net(Graph graph, NetOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->graph = std::move(graph);
  impl_->options = options;
  impl_->build();
}

void Net::reset_state() {
  for (auto& state : impl_->carried) state.clear();
}

void Net::Impl::print_profile() const {
  const auto per_call_ms = [](const std::vector<StepTime>& times, std::size_t step) {
    return step < times.size() && times[step].calls > 0 ? times[step].seconds * 1e3 / static_cast<double>(times[step].calls)
                                                        : 0.0;
  };
  double total = 0.0;
  for (std::size_t step = 0; step < kernels.size(); ++step)
    total += per_call_ms(forward_time, step) + per_call_ms(backward_time, step);
  if (total == 0.0) return;
  const bool backward = !backward_time.empty();
  std::fprintf(stderr, "%4s %-28s %-14s %-48s %12s%s %7s %s\n", "step", "layer", "type", "kernel", "forward",
               backward ? "     backward" : "", "share", "output");
  for (std::size_t step = 0; step < kernels.size(); ++step) {
    const double forward_ms = per_call_ms(forward_time, step), backward_ms = per_call_ms(backward_time, step);
    if (forward_ms == 0.0 && backward_ms == 0.0) continue;
    char backward_column[32] = "";
    if (backward) std::snprintf(backward_column, sizeof backward_column, "%9.4f ms", backward_ms);
    std::fprintf(stderr, "%4zu %-28s %-14s %-48s %9.4f ms %11s %5.1f %% %s\n", step, layers[step]->name().c_str(),
                 layers[step]->type().c_str(), kernels[step]->name(), forward_ms, backward_column,
                 100.0 * (forward_ms + backward_ms) / total,
                 step_outputs[step].empty() ? "" : shapes[static_cast<std::size_t>(step_outputs[step][0])].str().c_str());
  }
}

Net::~Net() {
  if (impl_ && impl_->profile_layers) impl_->print_profile();
}
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
  const ScopedThreads scope(impl_->threads.get());
  if (!impl_->planned) impl_->plan();
  // A control-flow layer whose outputs came out in other shapes than planned (they depend on values)
  // remembered them: plan again with them and run again. Each pass settles at least one such layer, and
  // the shapes stay remembered, so a run on inputs like the last plans nothing (docs/control_flow.md).
  for (std::size_t pass = 0;; ++pass) {
    try {
      impl_->run();
      break;
    } catch (const OutputShapesChanged& e) {
      if (pass >= impl_->layers.size()) throw ModelError("net '" + impl_->graph.name + "': " + e.what() + " again");
      std::vector<Tensor> inputs;
      for (int id : impl_->input_ids) inputs.push_back(impl_->tensors[static_cast<std::size_t>(id)].clone());
      impl_->plan();
      for (std::size_t i = 0; i < inputs.size(); ++i)
        impl_->tensors[static_cast<std::size_t>(impl_->input_ids[i])].copy_from(inputs[i]);
    }
  }
  impl_->forwarded = true;
  impl_->backward_ran = false;
}

double Net::last_forward_ms() const { return impl_->last_forward_ms; }

Net::BatchSchedule Net::batch_schedule() const {
  if (!impl_->lanes) return {};
  return {impl_->lanes->lanes(), impl_->lanes->micro()};
}

float Net::loss() {
  impl_->require_training("loss()");
  if (!impl_->forwarded)
    throw ModelError("loss() of net '" + impl_->graph.name + "' needs a forward() first");
  double total = 0;
  for (std::size_t step = 0; step < impl_->layers.size(); ++step) {
    for (std::size_t k = 0; k < impl_->step_outputs[step].size(); ++k) {
      const float weight = impl_->loss_weights[step][k];
      if (weight == 0.0f) continue;
      const Tensor& stored = impl_->tensors[static_cast<std::size_t>(impl_->step_outputs[step][k])];
      const Tensor t = stored.device().is_cpu() ? stored : stored.to(Device::cpu());
      const float* values = t.data<float>();
      double sum = 0;
      for (std::int64_t i = 0; i < t.numel(); ++i) sum += values[i];
      total += weight * sum;
    }
  }
  return static_cast<float>(total);
}

void Net::backward() {
  impl_->require_training("backward()");
  if (!impl_->forwarded) {
    throw ModelError("backward() of net '" + impl_->graph.name + "' needs a forward() first");
  }
  if (impl_->backward_ran && !impl_->options.keep_intermediates) {
    throw ModelError(
        "backward() of net '" + impl_->graph.name +
        "' needs a forward() since the last backward(): its buffers are reused (keep_intermediates "
        "keeps them)");
  }
  const ScopedThreads scope(impl_->threads.get());
  impl_->backward_ran = true;
  impl_->run_backward();
  impl_->step_ran_uncaptured = impl_->ran_uncaptured;  // a forward and a backward ran unrecorded
  // A solver update of these parameters follows: kernels that packed them (in this net or another
  // sharing the memory) re-pack at their next forward; other nets' packed weights stay.
  for (Parameter& p : impl_->params) p.value.mark_written();
}

void Net::forward_backward() {
  impl_->require_training("forward_backward()");
  const ScopedThreads scope(impl_->threads.get());
  if (!impl_->planned) impl_->plan();
  if (!impl_->can_capture_training()) {
    forward();
    backward();
    return;
  }
  try {
    impl_->run_recorded(
        [&] {
          impl_->run_steps();
          impl_->queue_backward();
        },
        true, impl_->step_ran_uncaptured, "training step of net '" + impl_->graph.name + "'");
  } catch (const OutputShapesChanged&) {
    forward();  // plans again for the shapes that came out
    backward();
    return;
  }
  impl_->forwarded = true;
  impl_->backward_ran = true;
  for (Parameter& p : impl_->params) p.value.mark_written();
}

void Net::set_backward_observer(std::function<void(const std::string& layer)> observer) {
  impl_->backward_observer = std::move(observer);
}

void Net::synchronize() { impl_->stream->synchronize(); }

void Net::set_loss_scale(float scale) {
  impl_->require_training("set_loss_scale()");
  if (!std::isfinite(scale) || scale <= 0.0f) {
    throw UnsupportedError("net '" + impl_->graph.name +
                           "': the loss scale must be finite and positive, got " + std::to_string(scale));
  }
  if (scale == impl_->loss_scale) return;
  impl_->loss_scale = scale;
  impl_->stream->drop_capture();  // the recorded step holds the old scale: record it again
}

float Net::loss_scale() const { return impl_->loss_scale; }

std::string Net::non_finite_gradient() {
  impl_->require_training("non_finite_gradient()");
  if (!impl_->overflow_flags.defined() || !impl_->backward_ran) return "";
  const Tensor flags = impl_->overflow_flags.to(Device::cpu());
  const std::int32_t* flag = flags.data<std::int32_t>();
  for (std::size_t i = impl_->params.size(); i-- > 0;) {
    if (flag[i] != 0) return impl_->params[i].layer;
  }
  return "";
}

std::vector<Parameter> Net::parameters() {
  if (!impl_->planned) impl_->plan();
  // Writable views: their memory is marked written, so kernels that packed it check it again at
  // the next forward.
  if (impl_->options.training) {
    for (Parameter& p : impl_->params) p.value.mark_written();
    return impl_->params;
  }
  std::vector<Parameter> params;
  for (const auto& layer : impl_->layers) {
    for (std::size_t i = 0; i < layer->weights().size(); ++i) {
      const ParamSpec spec = i < layer->spec().params.size() ? layer->spec().params[i] : ParamSpec{};
      layer->weights()[i].mark_written();
      params.push_back({layer->name(), static_cast<int>(i), layer->weights()[i], Tensor{}, spec});
    }
  }
  return params;
}

std::vector<Tensor> Net::weights(const std::string& layer) {
  if (!impl_->planned) impl_->plan();
  for (const auto& l : impl_->layers) {
    if (l->name() != layer) continue;
    // Writable views: kernels that packed this memory check it again at the next forward.
    for (Tensor& w : l->weights()) w.mark_written();
    return l->weights();
  }
  return {};
}

const Tensor& Net::gradient(const std::string& name) const {
  impl_->require_training("gradient()");
  if (!impl_->planned) throw ModelError("gradient of '" + name + "' is not available before backward()");
  const Tensor& grad = impl_->grads[static_cast<std::size_t>(impl_->id_of(name))];
  if (!grad.defined()) {
    throw ModelError("no gradient flows to tensor '" + name + "' of net '" + impl_->graph.name + "'");
  }
  if (!impl_->options.keep_intermediates) {
    throw UnsupportedError("the gradient of '" + name + "' shares memory with others; create the Net with " +
                           "keep_intermediates to read gradients");
  }
  return grad;
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
  for (const Impl::OutputCast& cast : impl_->output_casts) {
    if (cast.id == id) return cast.value;
  }
  const auto index = static_cast<std::size_t>(id);
  const bool intact =
      impl_->readable[index] || (impl_->options.training && impl_->forwarded && !impl_->backward_ran &&
                                 impl_->readable_until_backward[index]);
  if (!intact) {
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
    LayerSummary row{layer.name(), layer.type(), {}, 0, 2 * impl_->step_macs[step], impl_->kernels[step]->name(),
                     impl_->step_device[step], {}};
    for (const Impl::Transfer& t : impl_->step_transfers[step]) {
      // Conversions on the layer's own device (mixed precision) are no copies between devices.
      if (impl_->tensor_device[static_cast<std::size_t>(t.source)] != impl_->step_device[step])
        row.copied_in.push_back(impl_->names[static_cast<std::size_t>(t.source)]);
    }
    for (int id : impl_->step_outputs[step])
      row.output_shapes.push_back(impl_->shapes[static_cast<std::size_t>(id)]);
    for (const Tensor& w : layer.weights()) row.params += w.numel();
    row.precision = impl_->step_precision[step];
    row.channels_last = impl_->step_channels_last[step];
    row.precision_note = impl_->step_precision_note[step];
    rows.push_back(std::move(row));
  }
  return rows;
}

MemoryReport Net::memory() {
  if (!impl_->planned) impl_->plan();
  MemoryReport report = impl_->report;
  std::set<const void*> seen;  // shared blobs once
  for (const auto& layer : impl_->layers) {
    for (const Tensor& w : layer->weights()) {
      if (seen.insert(w.raw()).second) report.weight_bytes += w.bytes();
    }
  }
  if (impl_->options.training) {
    for (const Parameter& p : impl_->params) report.weight_grad_bytes += p.grad.bytes();
  }
  for (const auto& kernel : impl_->kernels) report.workspace_bytes += kernel->workspace_bytes();
  if (impl_->stream) report.workspace_bytes += impl_->stream->workspace_bytes();
  return report;
}

}  // namespace espresso
