#pragma once

#include "layers/unary.h"

namespace espresso {

// Identity at inference: Caffe scales kept units at training time, so nothing is rescaled here.
class DropoutLayer final : public UnaryLayer {
 public:
  explicit DropoutLayer(const LayerSpec& spec);
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  float ratio() const { return ratio_; }

 private:
  float ratio_;
};

}  // namespace espresso
