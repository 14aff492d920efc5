#pragma once

#include <optional>

#include "layers/layer.h"

namespace espresso {

// Caffe's BatchNorm: y = (x - mean/s) / sqrt(var/s + eps) per channel (axis 1; one channel for rank
// 1), with s the stored scale factor (s = 0 means zero statistics). With batch statistics (training,
// unless `use_global_stats` says otherwise) it normalizes by the batch's own mean and biased variance
// and folds them into the stored blobs as Caffe does: s = s·f + 1, mean = mean·f + μ,
// var = var·f + m/(m−1)·σ², with f = `moving_average_fraction`.
class BatchNormLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit BatchNormLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  bool in_place() const override { return true; }
  bool learned_weight(std::size_t) const override { return false; }
  // True when forward normalizes by the batch's statistics rather than the stored ones.
  bool batch_statistics() const;
  // The per-channel y = x * multiplier + offset equivalent to the stored statistics.
  void affine(std::vector<float>& multiplier, std::vector<float>& offset) const;
  static std::int64_t channels(const Shape& input);
  float eps() const { return eps_; }
  float moving_average_fraction() const { return moving_average_fraction_; }

 private:
  float eps_;
  float moving_average_fraction_;
  std::optional<bool> use_global_stats_;
};

}  // namespace espresso
