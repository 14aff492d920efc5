#pragma once

#include "layers/layer.h"

namespace espresso {

// The SSD fork's prior (default) boxes. Inputs: a feature map N x C x H x W and the image N x C' x
// IH x IW (only their shapes are read). Output 1 x 2 x (H·W·P·4): channel 0 holds each cell's P boxes
// as corners (xmin, ymin, xmax, ymax) divided by the image size, channel 1 their 4 variances. Per
// cell, for each min_size: the min_size square, then the sqrt(min_size·max_size) square (when
// max_size is given), then one box per aspect ratio other than 1 (flip adds each ratio's inverse).
class PriorBoxLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit PriorBoxLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  // The output does not depend on the inputs' values: there is no gradient to add.
  void backward(const std::vector<Tensor>&, const std::vector<Tensor>&, const std::vector<Tensor>&,
                std::vector<Tensor>&, std::vector<Tensor>&) const override {}
  bool differentiable_input(std::size_t) const override { return false; }
  // Boxes per cell.
  std::int64_t num_priors() const {
    return static_cast<std::int64_t>(aspect_ratios_.size() * min_sizes_.size() + max_sizes_.size());
  }

 private:
  std::vector<double> min_sizes_, max_sizes_;
  std::vector<double> aspect_ratios_;  // 1 first, then the given ratios (and inverses), without repeats
  std::vector<double> variances_;      // one value for all four coordinates, or four
  bool clip_;
  double img_h_ = 0, img_w_ = 0;    // 0: from the image input
  double step_h_ = 0, step_w_ = 0;  // 0: image size / feature map size
  double offset_;
};

}  // namespace espresso
