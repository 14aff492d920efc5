#pragma once

#include "layers/labeled.h"

namespace espresso {

// The fraction of non-ignored positions whose label is among the `top_k` highest scores (ties
// count for the label, as in Caffe); 0 when every label is ignored.
class AccuracyLayer final : public LabeledLayer {
 public:
  static const LayerSchema& schema();
  explicit AccuracyLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  std::int64_t top_k() const { return top_k_; }

 private:
  std::int64_t top_k_;
};

}  // namespace espresso
