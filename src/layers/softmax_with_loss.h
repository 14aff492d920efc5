#pragma once

#include "core/host_device.h"
#include "layers/labeled.h"

namespace espresso {

enum class LossNormalization { valid, batch_size, full, none };

// What a loss summed over positions is divided by: the count of labels not ignored (valid), the batch, every
// position (full) or nothing; never below 1, as in Caffe (all labels ignored gives a zero loss). Shared by the
// CPU references and the CUDA kernels.
ESPRESSO_HOST_DEVICE inline double loss_normalizer(LossNormalization mode, long long valid, long long batch,
                                                   long long positions) {
  double n = 1.0;
  switch (mode) {
    case LossNormalization::valid:
      n = static_cast<double>(valid);
      break;
    case LossNormalization::batch_size:
      n = static_cast<double>(batch);
      break;
    case LossNormalization::full:
      n = static_cast<double>(positions);
      break;
    case LossNormalization::none:
      break;
  }
  return n < 1.0 ? 1.0 : n;
}

// The loss layers' `normalization` attribute, defaulting to `fallback`, and the mode it names once the
// registry has checked it.
AttrSpec loss_normalization_attribute(LossNormalization fallback);
LossNormalization loss_normalization(const Attributes& attrs);

// The mean (by `normalization`) of -log softmax(scores)[label] over non-ignored positions.
// An optional second output receives the softmax probabilities, as in Caffe.
class SoftmaxWithLossLayer final : public LabeledLayer {
 public:
  static const LayerSchema& schema();
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
