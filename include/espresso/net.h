// Net: a Graph made runnable. Shapes are inferred and memory planned apart from compute, once per
// set of input shapes; forward() only runs the plan.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "espresso/device_weights.h"
#include "espresso/graph.h"
#include "espresso/tensor.h"

namespace espresso {

// Worker threads for CPU kernels (OpenBLAS included). 0 picks ESPRESSO_NUM_THREADS, else the
// hardware's thread count.
void set_num_threads(int threads);
int num_threads();

// The arithmetic a net runs in (docs/precision.md). fp32 is exact IEEE single precision throughout.
// tf32 lets convolutions and matrix products on a GPU round their inputs to TF32 on tensor cores
// (never the default). fp16 and bf16 store the activations of every layer that has a kernel in that
// type on the net's device in it, with weights converted (once; before each forward when training) and
// fp32 accumulation; softmax, losses,
// normalisation statistics and layers without such a kernel stay fp32, with casts at the edges, and
// graph inputs and outputs are always fp32 to the caller. int8 runs convolutions on 8-bit integers
// where the device has such a kernel (the CPU): weights quantized per output channel once, each image's
// input quantized from its own range, int32 sums, fp32 outputs (docs/int8.md); a model made by
// `espresso quantize` carries calibrated int8 layers whatever the precision.
enum class Precision : std::uint8_t { fp32, tf32, fp16, bf16, int8 };
const char* precision_name(Precision precision);
// "fp32", "tf32", "fp16", "bf16" or "int8"; throws UnsupportedError naming the accepted values otherwise.
Precision parse_precision(const std::string& text);

struct NetOptions {
  // Where the net runs. On cuda:N the weights are uploaded once, activations live on the GPU and
  // input() returns device tensors; a layer the device has no kernel for runs on the CPU, with its
  // inputs and outputs copied across (summary() lists it; training needs every layer on the device).
  Device device = Device::cpu();
  // Run the plain reference kernels instead of the fast ones (for checking and debugging).
  bool reference_kernels = false;
  // Give every tensor its own buffer so all of them can be read after forward(), and when training
  // every gradient too (the naive plan; otherwise buffers are reused, docs/training-memory.md).
  bool keep_intermediates = false;
  // On a GPU: this net's weights already resident there (DeviceWeights::upload of its graph), shared
  // with other Nets instead of uploaded again. Must be on `device`.
  std::shared_ptr<const DeviceWeights> device_weights;
  // On a GPU, record the second forward() after planning as a CUDA graph and replay it afterwards,
  // which saves the launch cost of every kernel (the first runs uncaptured, so that libraries set
  // themselves up outside a capture). Turn off to attribute asynchronous kernel errors
  // to their layer.
  bool cuda_graphs = true;
  // Prepare for training: tensors get gradient buffers, planned with the activations so that each
  // buffer is reused once forward and backward are done with it, layers run in training mode (Dropout drops,
  // BatchNorm uses batch statistics), and backward() is available. On a GPU the weights, gradients and solver
  // history stay on the device, every layer that runs backward needs a CUDA backward, and forward() is not
  // recorded as a CUDA graph (forward_backward() is).
  bool training = false;
  // Seeds the random parts of training (Dropout masks, weight fillers), so runs repeat.
  std::uint64_t seed = 1;
  // Worker threads for this net's CPU kernels; 0 shares the process's pool (set_num_threads). OpenBLAS
  // keeps its own process-wide thread count.
  int threads = 0;
  // Recurrent layers (LSTM, GRU, RNN) start each forward() from the states the previous one ended
  // with instead of their initial-state inputs (or zeros), so a sequence can run chunk by chunk;
  // reset_state() starts over. A new batch size starts over too. Inference only.
  bool stateful = false;
  // The most arena memory (bytes, all devices together: activations, converted copies, and when training
  // their gradients and the GPU kernels' workspaces) this net may plan; a model whose shapes
  // ask for more fails with LimitError before anything is allocated. 0: limits().max_planned_bytes
  // (32 GiB by default, espresso/limits.h).
  std::int64_t max_planned_bytes = 0;
  // The arithmetic of the net's layers (see Precision). A layer the device has no kernel for in that
  // precision runs in fp32 (summary() says so per layer). Training takes fp32, or fp16 and bf16 on a GPU
  // (mixed precision: fp32 master weights, gradients of activations in their type, layers whose kernel in
  // it has no backward in fp32; set_loss_scale).
  Precision precision = Precision::fp32;
  // Turns that per-layer fallback into an UnsupportedError listing every such layer. Layers that stay
  // fp32 by design (softmax, losses, normalisation statistics) never count as a fallback.
  bool strict_precision = false;
};

// A learned blob with its gradient and its training settings.
struct Parameter {
  std::string layer;
  int index = 0;  // position in the layer's weights
  Tensor value;
  Tensor grad;
  ParamSpec spec;
};

struct LayerSummary {
  std::string name;
  std::string type;
  std::vector<Shape> output_shapes;
  std::int64_t params = 0;  // learned values
  std::int64_t flops = 0;   // 2 x multiply-accumulates, for the planned input shapes
  std::string kernel;       // the kernel the plan chose
  Device device;            // where it runs: the net's device, or the CPU where that has no kernel for it
  std::vector<std::string> copied_in;  // inputs copied from another device before it runs
  // The precision the layer computes in ("fp32", "tf32", "fp16", "bf16"), and why it is not the net's
  // when it differs: "kept" (a layer that stays fp32 by design) or "fallback" (no kernel in it here).
  std::string precision = "fp32";
  std::string precision_note;
  // Its 4-D tensors stored N, H, W, C (fp16/bf16 inference on a GPU, where tensor cores work so).
  bool channels_last = false;
};

// What a net's plan holds. Inference: the activation arena (planned) against one buffer per layer
// output (naive). Training: one arena holds the activations and their gradients, each buffer reused
// once its last reader in forward or backward has run; naive gives every tensor and every gradient a
// buffer of its own (NetOptions::keep_intermediates plans that way). docs/training-memory.md.
struct MemoryReport {
  // The arenas after buffer reuse: activations and converted copies (mixed precision), and when training
  // their gradients and, on a GPU, the kernels' workspaces.
  std::size_t planned_bytes = 0;
  std::size_t naive_bytes = 0;       // one buffer per layer output and copy (and per gradient when training)
  std::size_t activation_bytes = 0;  // naive: the layer outputs and converted copies
  std::size_t activation_grad_bytes = 0;  // naive: their gradients (training)
  std::size_t weight_bytes = 0;           // learned blobs, shared ones once
  std::size_t weight_grad_bytes = 0;      // their gradients (training)
  std::size_t workspace_bytes =
      0;  // scratch buffers of the kernels and their stream (im2col columns, cuDNN's), as allocated so far
  // Training on a GPU: the largest of the kernels' workspaces that the plan placed in the arena (part of
  // planned_bytes), each for the moments its kernel runs, instead of one held for the whole step.
  std::size_t arena_workspace_bytes = 0;
  // Training: the activations, and their gradients, each planned alone (for the breakdown; the arena,
  // planned_bytes, holds both, and the GPU's workspaces, reusing memory across them).
  std::size_t activation_planned_bytes = 0;
  std::size_t activation_grad_planned_bytes = 0;
  // The moment the most arena memory is in use ("forward of 'conv1'", "backward of 'fc'") and the
  // buffers in use then, largest first: a tensor's name, "gradient of <name>", a converted copy's
  // "<name> as f16" (under its reader's output where that runs in place over it), "workspace of <layer>".
  std::string busiest_moment;
  std::vector<std::pair<std::string, std::size_t>> busiest_buffers;
};

class Net {
 public:
  // Creates every layer and checks the graph; throws ModelError listing all unknown layer types.
  explicit Net(Graph graph, NetOptions options = {});
  ~Net();
  Net(Net&&) noexcept;
  Net& operator=(Net&&) noexcept;

  const Graph& graph() const;
  const NetOptions& options() const;
  std::vector<std::string> input_names() const;
  std::vector<std::string> output_names() const;
  Shape input_shape(const std::string& name) const;

  // Changes an input's shape; the next forward() plans again.
  void reshape(const std::string& input, const Shape& shape);
  // Sets dimension 0 of every input.
  void set_batch(std::int64_t batch);

  // The buffer to fill for an input (planned on first use); on the net's device, so fill it with
  // copy_from().
  Tensor& input(const std::string& name);
  void forward();
  // Forgets the recurrent states a stateful net carries (NetOptions::stateful).
  void reset_state();
  // How long the last forward() computed, in milliseconds: on a GPU the device time between CUDA
  // events around its queued work, on the CPU the wall time of its layers.
  double last_forward_ms() const;
  // How a CPU net runs a batch at inference, known after the first forward() of a plan: `lanes` worker
  // threads each taking an equal share of the images through the whole net, `micro_batch` images at a
  // time, where that measured faster (docs/cpu-performance.md; ESPRESSO_IMAGE_LANES=0 never, =1 always);
  // 0 lanes: each layer spreads the whole batch over the threads.
  struct BatchSchedule {
    int lanes = 0;
    std::int64_t micro_batch = 0;
  };
  BatchSchedule batch_schedule() const;
  // Copies the given inputs in (reshaping as needed), runs, and returns every graph output as a
  // CPU tensor.
  std::map<std::string, Tensor> forward(const std::map<std::string, Tensor>& inputs);
  // A graph output or input; any tensor (by original or unique name) with keep_intermediates. When
  // training, also the tensors still intact between forward() and backward() (UnsupportedError for
  // the others).
  // On the device of the layer that made it: the net's, or the CPU for a layer that fell back.
  const Tensor& tensor(const std::string& name) const;

  // Training (NetOptions::training). The loss of the last forward(): the sum of the loss outputs, each
  // times its loss weight.
  float loss();
  // Gradients of loss() with respect to every parameter (and every tensor), after a forward(); times
  // loss_scale(), and for tensors in their own type (mixed precision training).
  void backward();
  // forward() then backward(), as one: on a GPU (cuda_graphs on, every layer there, no backward
  // observer, no layer profile) recorded once as a CUDA graph after a first plain run and replayed, one
  // launch per step instead of one per kernel. A recording that fails (out of device memory, say) is
  // dropped with a warning on stderr and the net keeps running its steps unrecorded.
  void forward_backward();
  // Called inside backward() after each layer's backward pass (in backward order, layers that take no
  // gradient included) with the layer's name: a parameter's gradient is complete once the layer that owns
  // it (Parameter::layer) has been reported, so data-parallel training can send it while backward goes
  // on. On a GPU that layer's work may still be queued: synchronize() before reading it from elsewhere.
  void set_backward_observer(std::function<void(const std::string& layer)> observer);
  // Mixed precision training (precision fp16 or bf16; docs/training-throughput.md): backward starts from
  // the loss gradients times `scale`, so that small fp16 gradients do not flush to zero; the parameters'
  // gradients come out times `scale` too (a solver divides it out: Solver::update). 1 by default; a
  // power of two keeps the scaling exact. Throws UnsupportedError unless `scale` is finite and positive.
  void set_loss_scale(float scale);
  float loss_scale() const;
  // After backward() or forward_backward() in fp16: the layer owning the parameter whose gradient holds an
  // infinity or NaN, the last such layer in forward order (backward meets it first); empty when every
  // gradient is finite. Waits for the device. Empty in fp32 and bf16, whose gradients are not checked.
  std::string non_finite_gradient();
  // Waits for the work queued on the net's device.
  void synchronize();
  // Every learned blob, shared blobs once, with its gradient buffer (undefined outside training).
  // Values and gradients are views of the net's own memory (on its device when training): a solver
  // updates them in place.
  std::vector<Parameter> parameters();
  // The weight blobs of a layer as the net holds them (on its device when training), sharing memory
  // with the net; empty for layers without weights or names the net lacks. Planned first. CPU kernels
  // keep packed copies of some weights: weights(), parameters() and backward() mark the memory of the
  // tensors they hand out or a solver updates (Tensor::mark_written), and kernels whose weights come
  // from marked memory pack them again at the next forward(); other nets' packed weights stay. So write
  // through views taken after the last forward(), or call mark_written() after writing.
  std::vector<Tensor> weights(const std::string& layer);
  // The gradient of loss() with respect to a tensor after backward(); throws ModelError for tensors
  // no gradient flows to (graph inputs, labels, tensors the loss does not depend on), and
  // UnsupportedError unless the net keeps intermediates (gradient buffers are reused otherwise).
  const Tensor& gradient(const std::string& name) const;

  std::vector<LayerSummary> summary();
  MemoryReport memory();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace espresso
