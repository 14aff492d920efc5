#pragma once

#include <optional>

#include "layers/layer.h"
#include "layers/softmax_with_loss.h"

namespace espresso {

// Caffe's SigmoidCrossEntropyLoss: −Σ [t·log σ(x) + (1 − t)·log(1 − σ(x))] over logits x and targets t
// in [0, 1] of one element count, skipping targets equal to `ignore_label`, divided as `normalization`
// says ("batch_size" by default, as in Caffe; "valid" counts the targets not ignored).
class SigmoidCrossEntropyLossLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit SigmoidCrossEntropyLossLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  bool differentiable_input(std::size_t input) const override { return input == 0; }
  float default_loss_weight(int output) const override { return output == 0 ? 1.0f : 0.0f; }
  LossNormalization normalization() const { return normalization_; }
  const std::optional<std::int64_t>& ignore_label() const { return ignore_label_; }

 private:
  bool ignored(float target) const { return ignore_label_ && target == static_cast<float>(*ignore_label_); }
  double normalizer(const Shape& logits, std::int64_t valid) const;

  LossNormalization normalization_;
  std::optional<std::int64_t> ignore_label_;
};

}  // namespace espresso
