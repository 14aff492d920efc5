#pragma once

#include "layers/axis.h"
#include "layers/layer.h"

namespace espresso {

// Softmax over `axis` of an outer x channels x inner view; shared by Softmax and SoftmaxWithLoss.
void softmax_reference(const float* x, float* y, const AxisSplit& split);
// Adds the gradient through softmax: dx += y ⊙ (dy − Σ_c dy·y), from the softmax output y.
void softmax_backward_reference(const float* y, const float* dy, float* dx, const AxisSplit& split);

// y = exp(x - max) / sum(exp(x - max)) along `axis`.
class SoftmaxLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit SoftmaxLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  // The outer x channels x inner view of an input shape already checked by output_shapes().
  AxisSplit split(const Shape& input) const;

 private:
  std::int64_t axis_;
};

}  // namespace espresso
