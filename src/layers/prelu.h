#pragma once

#include "layers/layer.h"

namespace espresso {

// y = x > 0 ? x : slope[c] * x, with c the channel (axis 1), or one slope for all channels.
class PReLULayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit PReLULayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  bool in_place() const override { return true; }
  bool channel_shared() const { return channel_shared_; }

 private:
  bool channel_shared_;
};

}  // namespace espresso
