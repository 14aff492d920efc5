#pragma once

#include "layers/unary.h"

namespace espresso {

// y = 1 / (1 + exp(-x))
class SigmoidLayer final : public UnaryLayer {
 public:
  using UnaryLayer::UnaryLayer;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
};

}  // namespace espresso
