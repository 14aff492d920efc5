#pragma once

#include "layers/unary.h"

namespace espresso {

// y = tanh(x)
class TanHLayer final : public UnaryLayer {
 public:
  using UnaryLayer::UnaryLayer;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
};

}  // namespace espresso
