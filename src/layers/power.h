#pragma once

#include "layers/unary.h"

namespace espresso {

// y = (shift + scale * x)^power
class PowerLayer final : public UnaryLayer {
 public:
  explicit PowerLayer(const LayerSpec& spec);
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  float power() const { return power_; }
  float scale() const { return scale_; }
  float shift() const { return shift_; }

 private:
  float power_;
  float scale_;
  float shift_;
};

}  // namespace espresso
