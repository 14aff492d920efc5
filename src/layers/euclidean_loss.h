#pragma once

#include "layers/layer.h"

namespace espresso {

// Caffe's EuclideanLoss: Σ (a − b)² / (2·N) over two inputs of one element count, N = dimension 0
// of the first. Both inputs take gradients.
class EuclideanLossLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  using Layer::Layer;
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  float default_loss_weight(int output) const override { return output == 0 ? 1.0f : 0.0f; }
};

}  // namespace espresso
