#pragma once

#include "layers/layer.h"

namespace espresso {

// Picks slices of input 0 along `axis` (0) at the indices in input 1 (whole numbers stored as
// floats; negative ones count from the end). Output shape: data[:axis] + indices + data[axis+1:].
class GatherLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit GatherLayer(const LayerSpec& spec)
      : Layer(spec), axis_(static_cast<int>(spec.attrs.require_int("axis"))) {}
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  // The indices take no gradient.
  bool differentiable_input(std::size_t input) const override { return input == 0; }
  int axis() const { return axis_; }

 private:
  int axis_;
};

}  // namespace espresso
