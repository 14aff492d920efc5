#pragma once

#include "layers/labeled.h"

namespace espresso {

enum class LossNormalization { valid, batch_size, full, none };

// The mean (by `normalization`) of -log softmax(scores)[label] over non-ignored positions.
// An optional second output receives the softmax probabilities, as in Caffe.
class SoftmaxWithLossLayer final : public LabeledLayer {
 public:
  explicit SoftmaxWithLossLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;

 private:
  LossNormalization normalization_;
};

}  // namespace espresso
