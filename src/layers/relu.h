#pragma once

#include "layers/layer.h"

namespace espresso {

// y = x > 0 ? x : negative_slope * x
class ReLULayer final : public Layer {
 public:
  explicit ReLULayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  bool in_place() const override { return true; }
  float negative_slope() const { return negative_slope_; }

 private:
  float negative_slope_;
};

}  // namespace espresso
