#pragma once

#include "layers/layer.h"

namespace espresso {

enum class EltwiseOperation { sum, prod, max };

// Element-wise sum (weighted by `coeffs`), product or maximum of two or more inputs of one shape.
class EltwiseLayer final : public Layer {
 public:
  explicit EltwiseLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  EltwiseOperation operation() const { return operation_; }
  // One coefficient per input (all 1 unless given).
  std::vector<float> coefficients(std::size_t input_count) const;

 private:
  EltwiseOperation operation_;
  std::vector<double> coeffs_;
};

}  // namespace espresso
