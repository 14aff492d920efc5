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
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  float default_loss_weight(int output) const override { return output == 0 ? 1.0f : 0.0f; }
  LossNormalization normalization() const { return normalization_; }

 private:
  // What the summed loss is divided by, given the count of non-ignored labels; never below 1.
  double normalizer(const AxisSplit& split, std::int64_t valid) const;

  LossNormalization normalization_;
};

}  // namespace espresso
