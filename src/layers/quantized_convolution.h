// A convolution computed on 8-bit integers: the input quantized (or already quantized), weights held
// as integers with a scale and zero point per output channel, products summed exactly in integers,
// and the sum turned back into real values (with the bias and an optional ReLU), requantized, or
// left as the integer sum. ONNX's QLinearConv and ConvInteger, and the convolutions `espresso quantize`
// writes, are this layer; the CPU and CUDA kernels (backends/{cpu,cuda}/quantized_convolution.*) use u8×s8
// GEMMs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "layers/convolution.h"
#include "layers/quantize.h"

namespace espresso {

// Quantization parameters of a QuantizedConvolution, resolved from its attributes.
struct QuantizedConvParams {
  enum class Input { real, quantized, dynamic };  // x in real units / already integers / range per image
  // real units / integers of the output type / real units rounded to that type's grid (ONNX's
  // QuantizeLinear then DequantizeLinear, as QDQ models end each convolution) / the raw integer sums
  enum class Output { real, quantized, dequantized, accumulator };
  Input input = Input::real;
  Output output = Output::real;
  double input_scale = 1, input_zero_point = 0;
  QuantRange input_range;
  double output_scale = 1, output_zero_point = 0;
  QuantRange output_range;
  bool relu = false;
};

// The longest window (in_channels / group · taps) whose u8 × s8 products the kernels sum exactly in int32:
// 2^31 / (255 · 128). Longer ones run the reference, which sums in int64.
inline constexpr std::int64_t kInt8ExactDepth = (std::int64_t{1} << 31) / (255 * 128);

// A convolution's weights as the int8 kernels of every backend take them: the integers less their zero
// points, out_channels rows of depth (in_channels / group · window) values in [-128, 127], a scale per
// output channel, and the bias in real units (empty without one).
struct Int8ConvWeights {
  std::vector<std::int8_t> values;
  std::vector<double> scale;
  std::vector<float> bias;
};

class QuantizedConvolutionLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit QuantizedConvolutionLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  // weights (integers), weight_scale [C_out], weight_zero_point [C_out], then bias [C_out] if any.
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  std::int64_t macs(const std::vector<Shape>& inputs) const override;

  ConvGeometry geometry(const Shape& input) const;
  const QuantizedConvParams& quant() const { return quant_; }
  bool has_bias() const { return conv_.bias; }
  // Throws ModelError naming the layer and field for non-positive scales, zero points outside the
  // types' ranges and weights that are not integers of the weight type's range.
  void check_weights() const;
  // Input::dynamic's scale and zero point for an image whose values span [lo, hi] (0 included), which
  // fast kernels must match; the integer input is then q = saturate(round(x / scale) + zero_point).
  static void dynamic_params(double lo, double hi, double& scale, double& zero_point);
  // The weights for int8 kernels (after check_weights); nullopt where uint8 weights lie too far from
  // their zero point for int8, which leaves the layer to its reference.
  std::optional<Int8ConvWeights> int8_weights(const ConvGeometry& g) const;

 private:
  ConvParams conv_;
  QuantizedConvParams quant_;
  QuantRange weight_range_;
};

// A float convolution's weights for Precision::int8: symmetric int8 per output channel, scale max |w| / 127.
Int8ConvWeights quantize_convolution_weights(const ConvolutionLayer& conv, const ConvGeometry& g);

}  // namespace espresso
