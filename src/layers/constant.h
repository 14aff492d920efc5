#pragma once

#include "layers/layer.h"

namespace espresso {

// Produces its one weight blob, of shape `shape`: the constants that ONNX graphs feed into operators.
class ConstantLayer final : public Layer {
 public:
  explicit ConstantLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;

 private:
  Shape shape_;
};

}  // namespace espresso
