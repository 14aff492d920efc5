#pragma once

#include "layers/unary.h"

namespace espresso {

// y = |x|
class AbsValLayer final : public UnaryLayer {
 public:
  using UnaryLayer::UnaryLayer;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
};

}  // namespace espresso
