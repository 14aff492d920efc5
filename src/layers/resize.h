#pragma once

#include "layers/layer.h"

namespace espresso {

// Resizes every axis by `scales` (one per axis; output = floor(input · scale)) or to `sizes`
// (one per axis; then scale = size / input). `mode`: "nearest" or "linear" (n-linear). Output
// coordinates map to input ones by `coordinate_transformation_mode` (half_pixel,
// pytorch_half_pixel, align_corners, asymmetric, tf_half_pixel_for_nn; default half_pixel);
// nearest rounds by `nearest_mode` (round_prefer_floor, round_prefer_ceil, floor, ceil).
class ResizeLayer final : public Layer {
 public:
  explicit ResizeLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;

 private:
  double source_coordinate(double x, double scale, std::int64_t in, double out) const;
  double scale_of(const Shape& in, const Shape& out, int axis) const;

  bool linear_;
  std::string coordinates_, rounding_;
  std::vector<double> scales_;
  std::vector<std::int64_t> sizes_;
};

}  // namespace espresso
