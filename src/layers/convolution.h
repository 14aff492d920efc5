#pragma once

#include <cstdint>
#include <vector>

#include "layers/layer.h"
#include "layers/window.h"

namespace espresso {

// Convolution or deconvolution geometry resolved for one input shape, per spatial axis.
struct ConvGeometry {
  std::int64_t batch = 0;
  std::int64_t in_channels = 0;
  std::int64_t out_channels = 0;
  std::int64_t group = 1;
  std::vector<std::int64_t> in_size, out_size, kernel, stride, pad, dilation;

  int axes() const { return static_cast<int>(in_size.size()); }
  std::int64_t in_spatial() const;
  std::int64_t out_spatial() const;
  std::int64_t kernel_spatial() const;
  // N x out_channels x out_size...
  Shape output_shape() const;
};

// The attributes Convolution and Deconvolution share, validated on construction (ModelError).
struct ConvParams {
  static std::vector<AttrSpec> attributes();
  explicit ConvParams(const Attributes& attrs);

  // Fills everything but out_size from an N x C x spatial... input. Throws ShapeError for a bad
  // rank or per-axis list length, ModelError when `group` does not divide the channels.
  ConvGeometry resolve(const Layer& layer, const Shape& input) const;
  // The filter shape `rows` x `columns` x kernel..., then the bias when there is one.
  std::vector<Shape> weight_shapes(const ConvGeometry& g, std::int64_t rows, std::int64_t columns) const;

  std::int64_t num_output;
  std::int64_t group;
  bool bias;
  AxisValues kernel, stride, pad, dilation;
};

// Cross-correlation over 1 or more spatial axes, with groups, dilation and an optional bias.
class ConvolutionLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit ConvolutionLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  std::int64_t macs(const std::vector<Shape>& inputs) const override;
  bool backward_reads_outputs() const override { return false; }

  // Throws ShapeError when the input does not fit.
  ConvGeometry geometry(const Shape& input) const;
  bool has_bias() const { return params_.bias; }

 private:
  ConvParams params_;
};

}  // namespace espresso
