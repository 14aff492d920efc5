#pragma once

#include <cstdint>
#include <vector>

#include "layers/convolution.h"

namespace espresso {

// Transposed convolution: every input value scatters a weighted copy of its filter into the
// output. Weights are C x num_output/group x k..., the layout of the convolution it transposes.
class DeconvolutionLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit DeconvolutionLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  std::int64_t macs(const std::vector<Shape>& inputs) const override;

  // in_size is the layer's input, out_size its (larger) output. Throws ShapeError when the input
  // does not fit.
  ConvGeometry geometry(const Shape& input) const;
  bool has_bias() const { return params_.bias; }
  // Per-axis output padding for this number of spatial axes.
  std::vector<std::int64_t> output_pad(int axes) const { return output_pad_.expand(axes); }

 private:
  ConvParams params_;
  AxisValues output_pad_;
};

}  // namespace espresso
