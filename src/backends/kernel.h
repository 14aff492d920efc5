// Kernel: a layer's forward pass prepared by a backend for fixed input shapes.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "layers/layer.h"

namespace espresso {

struct PoolGeometry;

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) = 0;
  // The backward pass, with Layer::backward's contract (gradients are added). The default runs the
  // layer's reference backward, so a fast forward needs no fast backward to be trainable.
  virtual void backward(const Layer& layer, const std::vector<Tensor>& inputs,
                        const std::vector<Tensor>& outputs, const std::vector<Tensor>& output_grads,
                        std::vector<Tensor>& input_grads, std::vector<Tensor>& weight_grads) {
    layer.backward(inputs, outputs, output_grads, input_grads, weight_grads);
  }
  // True when backward() is this kernel's own rather than the layer's reference.
  virtual bool has_fast_backward() const { return false; }
  // Whether backward() reads the layer's inputs (the memory plan keeps them until then when it does).
  virtual bool backward_reads_inputs() const { return true; }
  // Layer::backward_in_place for this kernel's backward: the reference's answer unless the kernel has
  // its own backward, which must opt in.
  virtual bool backward_in_place(const Layer& layer) const {
    return !has_fast_backward() && layer.backward_in_place();
  }
  // Called once the device has finished the work forward() queued: throws what device code found
  // wrong (a label that is not a class index) as the typed error the CPU kernel would have thrown.
  virtual void check_completed() {}
  // Stateful nets (NetOptions::stateful): the kernel keeps what carries over from one forward() to the
  // next (a recurrent layer's final states) in `state`, which the net owns so that it survives
  // replanning. Returns false for kernels that carry nothing.
  virtual bool bind_state(std::vector<std::vector<float>>* /*state*/) { return false; }
  // Fusion (inference only; the net checks that nothing else reads the intermediate tensor): the
  // kernel takes over an element-wise step after it as it writes its output. fuse_residual: add
  // `residual` (the output's shape) to the output; fuse_clamp: then clamp it to [lo, hi] (ReLU,
  // ReLU6, clip). Each returns false when the kernel cannot, and the step runs on its own.
  virtual bool fuse_residual(const Tensor& /*residual*/) { return false; }
  // A per-channel y = x·multiplier + offset after it (an inference BatchNorm), its coefficients read
  // through `coefficients` whenever the kernel packs its weights, which it does again when the
  // version of one of `sources` (the tensors they are computed from) moves. Before any residual or clamp.
  struct ChannelAffine {
    std::function<void(std::vector<float>& multiplier, std::vector<float>& offset)> coefficients;
    std::vector<Tensor> sources;
  };
  virtual bool fuse_channel_affine(ChannelAffine /*affine*/) { return false; }
  virtual bool fuse_clamp(float /*lo*/, float /*hi*/) { return false; }
  // The ReLU/clip that alone makes this kernel's first input, which it alone reads: the kernel clamps that
  // input to [lo, hi] as it reads it, and the clip's producer writes its values unclamped (a GEMM epilogue
  // without an upper bound, MobileNet's ReLU6). False when the kernel cannot.
  virtual bool fuse_input_clamp(float /*lo*/, float /*hi*/) { return false; }
  // Training: the per-channel Scale (learned `scale`, optional `bias`) that alone reads this kernel's
  // output (a batch-statistics BatchNorm's), and the ReLU without slope that alone reads the Scale's
  // output when `relu`. The kernel writes that last step's output as a second output in forward() and,
  // in backward(), reads its gradient as a second output gradient and adds the Scale's weight
  // gradients (`scale_grad`, `bias_grad`). Its own output is still written (its backward reads it);
  // its own output gradient is not read. False when the kernel cannot.
  struct TrainingScale {
    Tensor scale, bias, scale_grad, bias_grad;  // bias and bias_grad undefined without a bias term
    bool relu = false;
  };
  virtual bool fuse_training_scale(TrainingScale /*scale*/) { return false; }
  // Writes the output of image n at base + n·image_stride floats instead of into the output tensor
  // (its slice of a channel Concat that reads it alone); false when the kernel cannot. A device
  // kernel takes a null base as taking the redirection back (the Concat's other inputs could not).
  virtual bool redirect_output(float* /*base*/, std::int64_t /*image_stride*/) { return false; }
  // The residual Add runs in place on its other operand's memory (elements of `dtype`, laid out as the
  // kernel's output): the kernel writes image n at base + n·image_stride elements, adding its result to the
  // residual found there (before any fused clamp); false when the kernel cannot.
  virtual bool accumulate_output(void* /*base*/, DType /*dtype*/, std::int64_t /*image_stride*/) {
    return false;
  }
  // The max pooling that alone reads its output (`pool`: that pooling's geometry): the kernel pools its
  // output as it makes it and writes only the pooled result, image after image at `pooled` (the
  // pooling's output), never its own; false when it cannot.
  virtual bool fuse_max_pooling(const PoolGeometry& /*pool*/, float* /*pooled*/) { return false; }
  // Bytes of scratch memory the kernel holds of its own (im2col columns, per-thread sums), as
  // allocated so far; for memory reports.
  virtual std::size_t workspace_bytes() const { return 0; }
  // A short description for profiles and `espresso info`, e.g. "im2col+sgemm".
  virtual const char* name() const = 0;
};

// Runs the layer's own reference forward.
class ReferenceKernel final : public Kernel {
 public:
  explicit ReferenceKernel(const Layer& layer) : layer_(layer) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    layer_.forward(inputs, outputs);
  }
  const char* name() const override { return "reference"; }

 private:
  const Layer& layer_;
};

}  // namespace espresso
