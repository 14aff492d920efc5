#pragma once

#include <cstdint>
#include <vector>

#include "layers/layer.h"

namespace espresso {

// Local response normalisation as Caffe computes it:
//   across channels: y = x · (k + alpha/size · Σ x²)^-beta over `size` neighbouring channels;
//   within a channel: y = x · (1 + alpha/size² · Σ x²)^-beta over a size x size window, zero padded.
// Caffe builds the within-channel form from Power layers with shift 1, so `k` does not enter it.
class LRNLayer final : public Layer {
 public:
  explicit LRNLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;

  bool across_channels() const { return across_; }
  std::int64_t size() const { return size_; }
  float alpha() const { return alpha_; }
  float beta() const { return beta_; }
  float k() const { return k_; }
  // The window around index i covers [i - before(), i - before() + size()).
  std::int64_t before() const { return (size_ - 1) / 2; }

 private:
  std::int64_t size_;
  float alpha_;
  float beta_;
  float k_;
  bool across_;
};

}  // namespace espresso
