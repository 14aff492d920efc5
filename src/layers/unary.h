// Base for element-wise layers with one input and one output of the same shape.
#pragma once

#include "layers/layer.h"

namespace espresso {

class UnaryLayer : public Layer {
 public:
  using Layer::Layer;
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override {
    expect_inputs(inputs, 1, 1);
    return {inputs[0]};
  }
  bool in_place() const override { return true; }
};

}  // namespace espresso
