#pragma once

#include "layers/layer.h"

namespace espresso {

// Produces its one weight blob, of shape `shape`: the constants that ONNX graphs feed into operators.
// The blob is part of the model, not learned (like a PyTorch buffer), so training leaves it alone.
class ConstantLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit ConstantLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  // No inputs and no learned blob: nothing to compute.
  void backward(const std::vector<Tensor>&, const std::vector<Tensor>&, const std::vector<Tensor>&,
                std::vector<Tensor>&, std::vector<Tensor>&) const override {}
  bool learned_weight(std::size_t) const override { return false; }

 private:
  Shape shape_;
};

}  // namespace espresso
