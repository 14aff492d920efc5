#pragma once

#include "layers/broadcast.h"

namespace espresso {

// y = x * scale (+ b), the scale (learned or input 1) broadcast from `axis` over `num_axes` axes.
class ScaleLayer final : public AxesBroadcastLayer {
 public:
  static const LayerSchema& schema();
  explicit ScaleLayer(const LayerSpec& spec);
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  bool has_bias() const { return bias_; }
  // The scale for these inputs (learned or input 1).
  const float* scale_data(const std::vector<Tensor>& inputs) const;
  // The learned bias, nullptr without one.
  const float* bias_data() const;

 private:
  bool bias_;
};

}  // namespace espresso
