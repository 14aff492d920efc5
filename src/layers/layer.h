// Layer: parameters, shape inference and the plain reference kernel of one layer type.
// The reference is the test oracle for every fast variant; keep it simple and obviously right.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "espresso/errors.h"
#include "espresso/graph.h"
#include "espresso/tensor.h"
#include "layers/schema.h"

namespace espresso {

class Layer {
 public:
  explicit Layer(const LayerSpec& spec) : spec_(spec) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& name() const { return spec_.name; }
  const std::string& type() const { return spec_.type; }
  const LayerSpec& spec() const { return spec_; }
  const std::vector<Tensor>& weights() const { return spec_.weights; }
  std::vector<Tensor>& weights() { return spec_.weights; }

  // Checks the input shapes and returns one shape per output in spec().outputs.
  // Throws ShapeError (through fail()) when the inputs do not fit.
  virtual std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const = 0;
  // The learned blobs this layer expects for these inputs, in order.
  virtual std::vector<Shape> weight_shapes(const std::vector<Shape>& /*inputs*/) const { return {}; }
  // The reference kernel: CPU, fp32, straightforward loops.
  virtual void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const = 0;
  // True when output 0 may share input 0's buffer (element-wise layers).
  virtual bool in_place() const { return false; }
  // Multiply-accumulates for these inputs (convolution and matrix-product layers).
  virtual std::int64_t macs(const std::vector<Shape>& /*inputs*/) const { return 0; }

  // ---- training ----
  // The reference backward pass. Given the forward's inputs and outputs and the gradients of the loss
  // with respect to the outputs, ADDS the gradients with respect to the inputs into `input_grads` (an
  // undefined entry needs none: data, labels) and with respect to the weights into `weight_grads`
  // (same order as weights()). Adding lets a tensor read by several layers, and iter_size
  // accumulation, need no special case; the executor zeroes gradients before each backward.
  // The default throws UnsupportedError naming the layer.
  virtual void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                        const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                        std::vector<Tensor>& weight_grads) const;
  // False for inputs no gradient is defined for (labels, indices): backward leaves them alone and the
  // executor gives them no gradient buffer.
  virtual bool differentiable_input(std::size_t /*input*/) const { return true; }
  // Memory planning of training (docs/training-memory.md). True when backward() accepts
  // input_grads[0] sharing output_grads[0]'s memory: it then overwrites the buffer with the input's
  // gradient, computed as 0.0f + g so that the values are those of adding g to a zeroed buffer (the
  // executor arranges that nothing else adds to that gradient). Element-wise layers whose element i of
  // the input gradient depends on element i of the output gradient alone.
  virtual bool backward_in_place() const { return false; }
  // True when output 0 may overwrite input 0 while training too: backward gives the same gradients
  // when its input 0 holds the output's values (ReLU without a negative slope, Dropout).
  virtual bool in_place_while_training() const { return false; }
  // False when backward() never reads `outputs`, so that a later in-place layer may overwrite them.
  virtual bool backward_reads_outputs() const { return true; }
  // Layers that behave differently while training (Dropout, BatchNorm) read this in forward().
  void set_training(bool training) { training_ = training; }
  bool training() const { return training_; }
  // Seeds the layer's randomness while training (Dropout masks); the executor derives it from
  // NetOptions::seed.
  void set_seed(std::uint64_t seed) { seed_ = seed; }
  std::uint64_t seed() const { return seed_; }
  // False for blobs that hold state rather than learned values (BatchNorm's statistics): they get
  // lr_mult and decay_mult 0, so solvers leave them alone.
  virtual bool learned_weight(std::size_t /*index*/) const { return true; }
  // The weight of output k in the total loss when the model does not say: Caffe gives 1 to the first
  // output of loss layers and 0 to everything else.
  virtual float default_loss_weight(int /*output*/) const { return 0.0f; }

 protected:
  // "layer 'conv1' (Convolution): <what>"
  std::string describe(const std::string& what) const;
  [[noreturn]] void fail_shape(const std::string& what) const;
  [[noreturn]] void fail_model(const std::string& what) const;
  // Throws ShapeError unless the input count lies in [min, max].
  void expect_inputs(const std::vector<Shape>& inputs, std::size_t min, std::size_t max) const;

 private:
  LayerSpec spec_;
  bool training_ = false;
  std::uint64_t seed_ = 0;
};

}  // namespace espresso
