#pragma once

#include "layers/layer.h"

namespace espresso {

// Joins the inputs along `axis`; all other dimensions must agree.
class ConcatLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit ConcatLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  // The axis as given (negative counts from the end).
  std::int64_t axis() const { return axis_; }

 private:
  std::int64_t axis_;
};

}  // namespace espresso
