#pragma once

#include "layers/broadcast.h"

namespace espresso {

// y = x + b, the bias (learned or input 1) broadcast from `axis` over `num_axes` axes.
class BiasLayer final : public AxesBroadcastLayer {
 public:
  static const LayerSchema& schema();
  using AxesBroadcastLayer::AxesBroadcastLayer;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  const float* bias_data(const std::vector<Tensor>& inputs) const;
};

}  // namespace espresso
