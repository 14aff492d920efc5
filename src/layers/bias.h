#pragma once

#include "layers/broadcast.h"

namespace espresso {

// y = x + b, the bias (learned or input 1) broadcast from `axis` over `num_axes` axes.
class BiasLayer final : public AxesBroadcastLayer {
 public:
  using AxesBroadcastLayer::AxesBroadcastLayer;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  const float* bias_data(const std::vector<Tensor>& inputs) const;
};

}  // namespace espresso
