#pragma once

#include "layers/layer.h"

namespace espresso {

// y = x − max − ln Σ exp(x − max) along `axis` (1).
class LogSoftmaxLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit LogSoftmaxLayer(const LayerSpec& spec)
      : Layer(spec), axis_(static_cast<int>(spec.attrs.require_int("axis"))) {}
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  int axis() const { return axis_; }

 private:
  int axis_;
};

}  // namespace espresso
