#pragma once

#include "layers/layer.h"

namespace espresso {

// Resizes every axis by `scales` (one per axis; output = floor(input · scale)) or to `sizes`
// (one per axis; then scale = size / input). `mode`: "nearest", "linear" (n-linear) or "cubic"
// (Keys kernel with `cubic_coeff_a`, −0.75). Output coordinates map to input ones by
// `coordinate_transformation_mode` (half_pixel, pytorch_half_pixel, align_corners, asymmetric,
// tf_half_pixel_for_nn, tf_crop_and_resize; default half_pixel); tf_crop_and_resize reads the
// region from `roi` (starts of all axes, then ends, as fractions of the axis) and fills
// `extrapolation_value` (0) outside the input. Nearest rounds by `nearest_mode`
// (round_prefer_floor, round_prefer_ceil, floor, ceil). `exclude_outside` (0) drops the cubic
// taps that fall outside the input and renormalises the rest.
class ResizeLayer final : public Layer {
 public:
  // Per output coordinate of one axis: `count` input indices and their weights, or an index of
  // -1 in the first tap when the coordinate lies outside the cropped input.
  struct AxisTaps {
    int count = 1;
    std::vector<std::int64_t> index;  // out · count entries
    std::vector<double> weight;
  };

  static const LayerSchema& schema();
  explicit ResizeLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  // Each output's gradient goes back to the input elements it interpolates, times their weights.
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  std::vector<AxisTaps> taps(const Shape& in, const Shape& out) const;
  float extrapolation_value() const { return extrapolation_value_; }

 private:
  enum class Mode { nearest, linear, cubic };

  // The input coordinate of output coordinate x, or NaN outside a tf_crop_and_resize region.
  double source_coordinate(double x, double scale, int axis, std::int64_t in, std::int64_t out) const;
  double scale_of(const Shape& in, const Shape& out, int axis) const;
  std::int64_t nearest(double x) const;
  // Calls visit(i, outside, taps) for every output element i: `taps` holds the input elements it
  // interpolates as (offset, weight), leaving out zero weights, and is empty when `outside` a
  // tf_crop_and_resize region.
  template <class Visit>
  void map_outputs(const Shape& in, const Shape& out, Visit&& visit) const;

  Mode mode_;
  std::string coordinates_, rounding_;
  std::vector<double> scales_;
  std::vector<std::int64_t> sizes_;
  std::vector<double> roi_;
  double cubic_a_;
  bool exclude_outside_;
  float extrapolation_value_;
};

}  // namespace espresso
