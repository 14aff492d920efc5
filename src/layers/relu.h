#pragma once

#include "layers/layer.h"

namespace espresso {

// y = x > 0 ? x : negative_slope * x
class ReLULayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit ReLULayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  bool in_place() const override { return true; }
  float negative_slope() const { return negative_slope_; }

 private:
  float negative_slope_;
};

}  // namespace espresso
