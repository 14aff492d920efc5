// Linear quantization as ONNX defines it (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear).
// Quantized values travel as f32 tensors holding integers (exact up to 2^24), so the rest of the
// executor needs no integer storage; the int8 arithmetic lives in QuantizedConvolution's kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "layers/layer.h"

namespace espresso {

// The integer range of a quantized type: "uint8" [0, 255], "int8" [-128, 127], "int32".
struct QuantRange {
  double lo = 0, hi = 255;
  static QuantRange of(const std::string& type);
};

// Round half to even, as ONNX's QuantizeLinear does, then saturate to the range.
double quantize_value(double x, double scale, double zero_point, const QuantRange& range);

// nearbyint without a library call, for values bound for an 8-bit range: adding and removing 1.5·2^23
// rounds half to even in the default rounding mode (vector code does the same with its own min/max);
// magnitudes beyond 2^22 saturate such a range anyway, so they are clamped first.
inline float round_half_even(float v) {
  constexpr float kMagic = 12582912.0f;
  v = std::clamp(v, -4194304.0f, 4194304.0f);
  const float shifted = v + kMagic;  // not folded: without -ffast-math the compiler keeps both steps
  return shifted - kMagic;
}

// y = saturate(round(x / scale) + zero_point). Inputs: x, scale, optional zero_point: scalars, or 1-D
// of x's length along `axis` (per-axis). Scales must be positive and zero points inside the type's
// range (ModelError naming the layer and the field). With `dequantize`, y = (that − zero_point) · scale: x
// rounded to the quantized grid, a QuantizeLinear → DequantizeLinear pair in one pass.
class QuantizeLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit QuantizeLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;

 private:
  std::int64_t axis_;
  QuantRange range_;
  bool dequantize_;
};

// y = (x - zero_point) · scale, same inputs as Quantize.
class DequantizeLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit DequantizeLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;

 private:
  std::int64_t axis_;
};

// ONNX DynamicQuantizeLinear: outputs y (uint8), scale and zero_point, the range taken from x
// (widened to include 0).
class DynamicQuantizeLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit DynamicQuantizeLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
};

// The scale and zero point DynamicQuantizeLinear picks for values in [lo, hi] (uint8).
void dynamic_quant_params(double lo, double hi, double& scale, double& zero_point);

}  // namespace espresso
