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
  static const LayerSchema& schema();
  explicit LRNLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  // With scale = base + norm · Σx² over the window, y = x · scale^-beta, as Caffe differentiates it:
  // dx = dy · scale^-beta − 2 · beta · norm · x · Σ dy·y/scale over the windows that contain x.
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;

  bool across_channels() const { return across_; }
  std::int64_t size() const { return size_; }
  float alpha() const { return alpha_; }
  float beta() const { return beta_; }
  float k() const { return k_; }
  // The window around index i covers [i - before(), i - before() + size()).
  std::int64_t before() const { return (size_ - 1) / 2; }

 private:
  // The scale of every element: base + norm · Σx² over its window.
  std::vector<float> scales(const Tensor& x) const;
  // Σv over the window of every element, or, when `transposed`, over the elements whose windows hold it.
  std::vector<float> window_sums(const std::vector<float>& v, const Shape& shape, bool transposed) const;
  float base() const { return across_ ? k_ : 1.0f; }
  float norm() const { return alpha_ / static_cast<float>(across_ ? size_ : size_ * size_); }

  std::int64_t size_;
  float alpha_;
  float beta_;
  float k_;
  bool across_;
};

}  // namespace espresso
