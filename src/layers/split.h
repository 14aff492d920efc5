#pragma once

#include "layers/layer.h"

namespace espresso {

// Copies its input to every output.
class SplitLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit SplitLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
};

}  // namespace espresso
