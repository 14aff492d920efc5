#pragma once

#include "layers/layer.h"

namespace espresso {

// Caffe's inference BatchNorm: y = (x - mean/s) / sqrt(var/s + eps) per channel (axis 1; one channel for rank
// 1), with s the stored scale factor (s = 0 means zero statistics).
class BatchNormLayer final : public Layer {
 public:
  explicit BatchNormLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  bool in_place() const override { return true; }
  // The per-channel y = x * multiplier + offset equivalent to the stored statistics.
  void affine(std::vector<float>& multiplier, std::vector<float>& offset) const;
  static std::int64_t channels(const Shape& input);

 private:
  float eps_;
};

}  // namespace espresso
