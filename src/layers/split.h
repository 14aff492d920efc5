#pragma once

#include "layers/layer.h"

namespace espresso {

// Copies its input to every output.
class SplitLayer final : public Layer {
 public:
  explicit SplitLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
};

}  // namespace espresso
