#include "layers/quantize.h"

#include <algorithm>
#include <cmath>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "layers/axis.h"

namespace espresso {

QuantRange QuantRange::of(const std::string& type) {
  if (type == "int8") return {-128, 127};
  if (type == "int32") return {-2147483648.0, 2147483647.0};
  return {0, 255};
}

double quantize_value(double x, double scale, double zero_point, const QuantRange& range) {
  // In float, as ONNX's reference and ONNX Runtime divide; nearbyint rounds half to even in the default
  // rounding mode.
  const double q = std::nearbyint(static_cast<float>(x) / static_cast<float>(scale)) + zero_point;
  return std::clamp(q, range.lo, range.hi);
}

void dynamic_quant_params(double lo, double hi, double& scale, double& zero_point) {
  // float32 arithmetic, as ONNX's DynamicQuantizeLinear defines it.
  const float low = std::min(static_cast<float>(lo), 0.0f), high = std::max(static_cast<float>(hi), 0.0f);
  const float s = (high - low) / 255.0f;
  scale = s;
  zero_point = s > 0 ? std::clamp(std::nearbyint(0.0f - low / s), 0.0f, 255.0f) : 0.0;
}

namespace {

const std::vector<std::string_view> kTypes = {"uint8", "int8", "int32"};

// Checks scale / zero_point against x's shape: scalars, or 1-D of x's length along `axis`.
// Returns the resolved axis (-1 for per-tensor).
int check_quant_params(const Layer& layer, const std::vector<Shape>& inputs, std::int64_t axis) {
  const Shape& x = inputs[0];
  int resolved = -1;
  for (std::size_t i = 1; i < inputs.size(); ++i) {
    const char* field = i == 1 ? "scale" : "zero_point";
    const Shape& s = inputs[i];
    if (s.numel() == 1 && s.rank() <= 1) continue;
    if (s.rank() != 1) {
      throw ShapeError("layer '" + layer.name() + "' (" + layer.type() + "): " + field +
                       " must be a scalar or 1-D, got " + s.str());
    }
    const std::optional<int> a = resolve_axis(axis, x.rank());
    if (!a) {
      throw ShapeError("layer '" + layer.name() + "' (" + layer.type() + "): axis " + std::to_string(axis) +
                       " is outside input " + x.str());
    }
    if (s[0] != x[*a]) {
      throw ShapeError("layer '" + layer.name() + "' (" + layer.type() + "): " + field + " has " +
                       std::to_string(s[0]) + " values for " + std::to_string(x[*a]) + " along axis " +
                       std::to_string(*a) + " of input " + x.str());
    }
    resolved = *a;
  }
  if (inputs.size() == 3 && inputs[1].numel() != inputs[2].numel()) {
    throw ShapeError("layer '" + layer.name() + "' (" + layer.type() + "): scale " + inputs[1].str() +
                     " and zero_point " + inputs[2].str() + " differ in length");
  }
  return resolved;
}

// y = clamp(round_half_even(x / s) + z, lo, hi), then with `dequantize` (y − z) · s, over n values, four at a
// time with SSE2 (the compiler keeps the clamps' branches, which NaN makes differ from min/max); NaN stays
// NaN, as one at a time: the bounds go first, and SSE's min/max return their second operand for NaN. The
// integers and zero points of 8-bit types make y − z exact in float, and a float product is rounded once, as
// the double one cast to float is.
void quantize_run(const float* x, std::int64_t n, float s, float z, float lo, float hi, bool dequantize,
                  float* y) {
  std::int64_t i = 0;
#if defined(__SSE2__)
  const __m128 scale = _mm_set1_ps(s), zero = _mm_set1_ps(z), low = _mm_set1_ps(lo), high = _mm_set1_ps(hi),
               roundable = _mm_set1_ps(4194304.0f), magic = _mm_set1_ps(12582912.0f);
  for (; i + 4 <= n; i += 4) {
    __m128 q = _mm_div_ps(_mm_loadu_ps(x + i), scale);
    q = _mm_min_ps(roundable, _mm_max_ps(_mm_sub_ps(_mm_setzero_ps(), roundable), q));
    q = _mm_add_ps(_mm_sub_ps(_mm_add_ps(q, magic), magic), zero);
    q = _mm_min_ps(high, _mm_max_ps(low, q));
    if (dequantize) q = _mm_mul_ps(_mm_sub_ps(q, zero), scale);
    _mm_storeu_ps(y + i, q);
  }
#endif
  for (; i < n; ++i) {
    const float q = std::clamp(round_half_even(x[i] / s) + z, lo, hi);
    y[i] = dequantize ? (q - z) * s : q;
  }
}

// Calls body(first, count, scale, zero_point) for every run of x's elements that share their parameters.
template <class Body>
void for_each_quantized_run(const Layer& layer, const std::vector<Tensor>& inputs, std::int64_t axis,
                            const QuantRange* zero_range, const Body& body) {
  const Shape& x = inputs[0].shape();
  const int a = check_quant_params(layer, shapes_of(inputs), axis);
  const float* scale = inputs[1].data<float>();
  const float* zero = inputs.size() > 2 ? inputs[2].data<float>() : nullptr;
  const std::int64_t params = inputs[1].numel();
  for (std::int64_t c = 0; c < params; ++c) {
    if (!(scale[c] > 0) || !std::isfinite(scale[c])) {
      throw ModelError("layer '" + layer.name() + "' (" + layer.type() + "): scale[" + std::to_string(c) +
                       "] is " + std::to_string(scale[c]) + "; scales must be positive and finite");
    }
    if (zero && zero_range && (zero[c] < zero_range->lo || zero[c] > zero_range->hi || zero[c] != std::floor(zero[c]))) {
      throw ModelError("layer '" + layer.name() + "' (" + layer.type() + "): zero_point[" + std::to_string(c) +
                       "] is " + std::to_string(zero[c]) + ", outside the quantized type's range [" +
                       std::to_string(static_cast<std::int64_t>(zero_range->lo)) + ", " +
                       std::to_string(static_cast<std::int64_t>(zero_range->hi)) + "]");
    }
  }
  const AxisSplit split = a < 0 ? AxisSplit{1, 1, x.numel()} : split_at(x, a, a + 1);
  for (std::int64_t o = 0; o < split.outer; ++o) {
    for (std::int64_t c = 0; c < split.channels; ++c) {
      const std::int64_t k = a < 0 ? 0 : c;
      body((o * split.channels + c) * split.inner, split.inner, scale[k], zero ? zero[k] : 0.0f);
    }
  }
}

}  // namespace

const LayerSchema& QuantizeLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {{.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{1}},
           {.name = "type", .type = AttrType::text, .fallback = std::string("uint8"), .choices = kTypes},
           {.name = "dequantize", .type = AttrType::integer, .fallback = std::int64_t{0}}},
      .weights = "–",
      .notes =
          "inputs x, scale, optional zero_point (scalars or per-axis); integers held in f32, or with "
          "dequantize their real values again",
  };
  return schema;
}

QuantizeLayer::QuantizeLayer(const LayerSpec& spec)
    : Layer(spec),
      axis_(spec.attrs.require_int("axis")),
      range_(QuantRange::of(spec.attrs.get_string("type", "uint8"))),
      dequantize_(spec.attrs.get_int("dequantize", 0) != 0) {}

std::vector<Shape> QuantizeLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, 3);
  check_quant_params(*this, inputs, axis_);
  return {inputs[0]};
}

void QuantizeLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  // 8-bit types round four at a time (quantize_run); int32 keeps nearbyint.
  const bool eight_bits = range_.hi - range_.lo < 256;
  const auto lo = static_cast<float>(range_.lo), hi = static_cast<float>(range_.hi);
  for_each_quantized_run(*this, inputs, axis_, &range_,
                         [&](std::int64_t first, std::int64_t count, float s, float z) {
                           const float* in = x + first;
                           float* out = y + first;
                           if (!eight_bits) {
                             for (std::int64_t i = 0; i < count; ++i) {
                               const double q = quantize_value(in[i], s, z, range_);
                               out[i] =
                                   static_cast<float>(dequantize_ ? (q - z) * static_cast<double>(s) : q);
                             }
                             return;
                           }
                           quantize_run(in, count, s, z, lo, hi, dequantize_, out);
                         });
}

const LayerSchema& DequantizeLayer::schema() {
  static const LayerSchema schema{
      .attributes = {{.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{1}}},
      .weights = "–",
      .notes = "inputs x, scale, optional zero_point (scalars or per-axis)",
  };
  return schema;
}

DequantizeLayer::DequantizeLayer(const LayerSpec& spec) : Layer(spec), axis_(spec.attrs.require_int("axis")) {}

std::vector<Shape> DequantizeLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, 3);
  check_quant_params(*this, inputs, axis_);
  return {inputs[0]};
}

void DequantizeLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for_each_quantized_run(
      *this, inputs, axis_, nullptr, [&](std::int64_t first, std::int64_t count, float s, float z) {
        for (std::int64_t i = first; i < first + count; ++i)
          y[i] = static_cast<float>((static_cast<double>(x[i]) - z) * static_cast<double>(s));
      });
}

const LayerSchema& DynamicQuantizeLayer::schema() {
  static const LayerSchema schema{
      .attributes = {},
      .weights = "–",
      .notes = "outputs y (uint8 values), scale, zero_point",
  };
  return schema;
}

DynamicQuantizeLayer::DynamicQuantizeLayer(const LayerSpec& spec) : Layer(spec) {}

std::vector<Shape> DynamicQuantizeLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  return {inputs[0], Shape{}, Shape{}};
}

void DynamicQuantizeLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  const std::int64_t n = inputs[0].numel();
  double lo = 0, hi = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, static_cast<double>(x[i]));
    hi = std::max(hi, static_cast<double>(x[i]));
  }
  double scale = 0, zero = 0;
  dynamic_quant_params(lo, hi, scale, zero);
  const float scale_f = static_cast<float>(scale);
  float* y = outputs[0].data<float>();
  const QuantRange range = QuantRange::of("uint8");
  for (std::int64_t i = 0; i < n; ++i)
    y[i] = scale_f > 0 ? static_cast<float>(quantize_value(x[i], scale_f, zero, range)) : 0.0f;
  if (outputs.size() > 1) outputs[1].data<float>()[0] = scale_f;
  if (outputs.size() > 2) outputs[2].data<float>()[0] = static_cast<float>(zero);
}

}  // namespace espresso
