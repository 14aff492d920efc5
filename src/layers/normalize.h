#pragma once

#include "layers/layer.h"

namespace espresso {

// How Normalize groups its input N x C x S (S = the product of the axes after 1): one group per sample
// over all C·S values (across_spatial), or one per sample and position over the C channels. Element k
// of group g is at offset(g, k) and takes scale channel(k) (always 0 with one shared scale).
struct NormalizeExtent {
  std::int64_t samples = 0, channels = 0, spatial = 0;
  bool across_spatial = true;
  bool channel_shared = true;

  std::int64_t groups() const { return across_spatial ? samples : samples * spatial; }
  std::int64_t group_size() const { return across_spatial ? channels * spatial : channels; }
  std::int64_t offset(std::int64_t g, std::int64_t k) const {
    return across_spatial ? g * channels * spatial + k
                          : (g / spatial * channels + k) * spatial + g % spatial;
  }
  std::int64_t channel(std::int64_t k) const {
    return channel_shared ? 0 : across_spatial ? k / spatial : k;
  }
};

// The SSD fork's L2 normalisation: y = scale · x / sqrt(Σ x² + eps), the sum over each group
// (NormalizeExtent), the scale learned per channel or shared by all.
class NormalizeLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit NormalizeLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  // The grouping of an input shape already checked by output_shapes().
  NormalizeExtent extent(const Shape& input) const;
  float eps() const { return eps_; }

 private:
  bool across_spatial_;
  bool channel_shared_;
  float eps_;
};

}  // namespace espresso
