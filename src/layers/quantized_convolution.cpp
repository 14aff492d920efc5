#include "layers/quantized_convolution.h"

#include <algorithm>
#include <cmath>

namespace espresso {

namespace {
const std::vector<std::string_view> kTypes = {"uint8", "int8"};
}

const LayerSchema& QuantizedConvolutionLayer::schema() {
  static const LayerSchema schema = [] {
    std::vector<AttrSpec> attrs = ConvParams::attributes();
    attrs.push_back({.name = "input", .type = AttrType::text, .fallback = std::string("real"),
                     .choices = {"real", "quantized", "dynamic"}});
    attrs.push_back({.name = "input_type", .type = AttrType::text, .fallback = std::string("uint8"), .choices = kTypes});
    attrs.push_back({.name = "input_scale", .type = AttrType::number, .fallback = 1.0});
    attrs.push_back({.name = "input_zero_point", .type = AttrType::integer, .fallback = std::int64_t{0}});
    attrs.push_back({.name = "weight_type", .type = AttrType::text, .fallback = std::string("int8"), .choices = kTypes});
    attrs.push_back({.name = "output", .type = AttrType::text, .fallback = std::string("real"),
                     .choices = {"real", "quantized", "dequantized", "accumulator"}});
    attrs.push_back({.name = "output_type", .type = AttrType::text, .fallback = std::string("uint8"), .choices = kTypes});
    attrs.push_back({.name = "output_scale", .type = AttrType::number, .fallback = 1.0});
    attrs.push_back({.name = "output_zero_point", .type = AttrType::integer, .fallback = std::int64_t{0}});
    attrs.push_back(flag("relu", false));
    return LayerSchema{
        .attributes = attrs,
        .weights = "weights (integers), weight_scale: C_out, weight_zero_point: C_out, bias: C_out (real units)",
        .notes = "int8 convolution: input real (quantized with input_scale/zero_point), quantized, or dynamic "
                 "(range per image); output real (+bias, relu), quantized, dequantized (real, rounded to the "
                 "output type's grid), or the integer accumulator",
    };
  }();
  return schema;
}

QuantizedConvolutionLayer::QuantizedConvolutionLayer(const LayerSpec& spec)
    : Layer(spec), conv_(spec.attrs), weight_range_(QuantRange::of(spec.attrs.get_string("weight_type", "int8"))) {
  const Attributes& a = spec.attrs;
  const std::string input = a.get_string("input", "real"), output = a.get_string("output", "real");
  quant_.input = input == "quantized" ? QuantizedConvParams::Input::quantized
                 : input == "dynamic" ? QuantizedConvParams::Input::dynamic
                                      : QuantizedConvParams::Input::real;
  quant_.output = output == "quantized"     ? QuantizedConvParams::Output::quantized
                  : output == "dequantized" ? QuantizedConvParams::Output::dequantized
                  : output == "accumulator" ? QuantizedConvParams::Output::accumulator
                                            : QuantizedConvParams::Output::real;
  quant_.input_scale = a.get_float("input_scale", 1.0);
  quant_.input_zero_point = static_cast<double>(a.get_int("input_zero_point", 0));
  quant_.input_range = QuantRange::of(a.get_string("input_type", "uint8"));
  quant_.output_scale = a.get_float("output_scale", 1.0);
  quant_.output_zero_point = static_cast<double>(a.get_int("output_zero_point", 0));
  quant_.output_range = QuantRange::of(a.get_string("output_type", "uint8"));
  quant_.relu = a.get_int("relu", 0) != 0;
  if (!(quant_.input_scale > 0) || !std::isfinite(quant_.input_scale))
    fail_model("input_scale " + std::to_string(quant_.input_scale) + " must be positive and finite");
  if (!(quant_.output_scale > 0) || !std::isfinite(quant_.output_scale))
    fail_model("output_scale " + std::to_string(quant_.output_scale) + " must be positive and finite");
  if (quant_.input_zero_point < quant_.input_range.lo || quant_.input_zero_point > quant_.input_range.hi)
    fail_model("input_zero_point " + std::to_string(static_cast<std::int64_t>(quant_.input_zero_point)) +
               " is outside the range of input_type " + a.get_string("input_type", "uint8"));
  if (quant_.output_zero_point < quant_.output_range.lo || quant_.output_zero_point > quant_.output_range.hi)
    fail_model("output_zero_point " + std::to_string(static_cast<std::int64_t>(quant_.output_zero_point)) +
               " is outside the range of output_type " + a.get_string("output_type", "uint8"));
  if (quant_.output == QuantizedConvParams::Output::accumulator && (conv_.bias || quant_.relu))
    fail_model("output 'accumulator' takes no bias and no relu");
}

ConvGeometry QuantizedConvolutionLayer::geometry(const Shape& input) const {
  ConvGeometry g = conv_.resolve(*this, input);
  g.out_channels = conv_.num_output;
  for (int i = 0; i < g.axes(); ++i) {
    const auto a = static_cast<std::size_t>(i);
    const std::int64_t extent = g.dilation[a] * (g.kernel[a] - 1) + 1;
    const std::int64_t size = g.in_size[a] + 2 * g.pad[a] - extent;
    if (size < 0) {
      fail_shape("window " + std::to_string(extent) + " is larger than the padded input along axis " +
                 std::to_string(i + 2) + " of " + input.str());
    }
    g.out_size.push_back(size / g.stride[a] + 1);
  }
  return g;
}

std::vector<Shape> QuantizedConvolutionLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  return {geometry(inputs[0]).output_shape()};
}

std::vector<Shape> QuantizedConvolutionLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  const ConvGeometry g = geometry(inputs[0]);
  std::vector<Shape> shapes = conv_.weight_shapes(g, g.out_channels, g.in_channels / g.group);
  shapes.insert(shapes.begin() + 1, {Shape{g.out_channels}, Shape{g.out_channels}});
  return shapes;
}

std::int64_t QuantizedConvolutionLayer::macs(const std::vector<Shape>& inputs) const {
  const ConvGeometry g = geometry(inputs[0]);
  return g.batch * g.out_channels * g.out_spatial() * (g.in_channels / g.group) * g.kernel_spatial();
}

void QuantizedConvolutionLayer::check_weights() const {
  const Tensor& w = weights().at(0);
  const float* scale = weights().at(1).data<float>();
  const float* zero = weights().at(2).data<float>();
  const std::int64_t channels = weights().at(1).numel();
  for (std::int64_t c = 0; c < channels; ++c) {
    if (!(scale[c] > 0) || !std::isfinite(scale[c]))
      fail_model("weight_scale[" + std::to_string(c) + "] is " + std::to_string(scale[c]) +
                 "; scales must be positive and finite");
    if (zero[c] < weight_range_.lo || zero[c] > weight_range_.hi || zero[c] != std::floor(zero[c]))
      fail_model("weight_zero_point[" + std::to_string(c) + "] is " + std::to_string(zero[c]) +
                 ", outside the range of weight_type");
  }
  const float* v = w.data<float>();
  for (std::int64_t i = 0; i < w.numel(); ++i) {
    if (v[i] < weight_range_.lo || v[i] > weight_range_.hi || v[i] != std::floor(v[i]))
      fail_model("weights[" + std::to_string(i) + "] is " + std::to_string(v[i]) +
                 ", not an integer of weight_type's range");
  }
}

void QuantizedConvolutionLayer::dynamic_params(double lo, double hi, double& scale, double& zero_point) {
  dynamic_quant_params(lo, hi, scale, zero_point);
  scale = static_cast<float>(scale);
  if (!(scale > 0)) scale = 1;  // an all-zero image: every q is the zero point
}

void QuantizedConvolutionLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  check_weights();
  const ConvGeometry g = geometry(inputs[0].shape());
  const float* x = inputs[0].data<float>();
  const float* w = weights()[0].data<float>();
  const float* w_scale = weights()[1].data<float>();
  const float* w_zero = weights()[2].data<float>();
  const float* bias = conv_.bias ? weights()[3].data<float>() : nullptr;
  float* y = outputs[0].data<float>();
  const int axes = g.axes();
  const std::int64_t in_spatial = g.in_spatial(), out_spatial = g.out_spatial(), taps = g.kernel_spatial();
  const std::int64_t in_group = g.in_channels / g.group, out_group = g.out_channels / g.group;
  std::vector<std::int64_t> out_pos(static_cast<std::size_t>(axes)), tap(static_cast<std::size_t>(axes));
  std::vector<double> q(static_cast<std::size_t>(g.in_channels * in_spatial));
  for (std::int64_t n = 0; n < g.batch; ++n) {
    const float* image = x + n * g.in_channels * in_spatial;
    double scale = quant_.input_scale, zero = quant_.input_zero_point;
    if (quant_.input == QuantizedConvParams::Input::dynamic) {
      double lo = 0, hi = 0;
      for (std::int64_t i = 0; i < g.in_channels * in_spatial; ++i) {
        lo = std::min(lo, static_cast<double>(image[i]));
        hi = std::max(hi, static_cast<double>(image[i]));
      }
      dynamic_params(lo, hi, scale, zero);
    }
    for (std::size_t i = 0; i < q.size(); ++i) {
      q[i] = quant_.input == QuantizedConvParams::Input::quantized
                 ? image[i]
                 : quantize_value(image[i], scale, zero,
                                  quant_.input == QuantizedConvParams::Input::dynamic ? QuantRange{0, 255}
                                                                                     : quant_.input_range);
    }
    for (std::int64_t oc = 0; oc < g.out_channels; ++oc) {
      const std::int64_t grp = oc / out_group;
      for (std::int64_t o = 0; o < out_spatial; ++o) {
        std::int64_t rest = o;
        for (int a = axes - 1; a >= 0; --a) {
          out_pos[static_cast<std::size_t>(a)] = rest % g.out_size[static_cast<std::size_t>(a)];
          rest /= g.out_size[static_cast<std::size_t>(a)];
        }
        std::int64_t acc = 0;  // exact: |products| < 2^16, far fewer than 2^47 of them
        for (std::int64_t ic = 0; ic < in_group; ++ic) {
          const std::int64_t channel = grp * in_group + ic;
          for (std::int64_t t = 0; t < taps; ++t) {
            std::int64_t trest = t, offset = 0;
            bool inside = true;
            for (int a = axes - 1; a >= 0; --a) {
              const auto i = static_cast<std::size_t>(a);
              tap[i] = trest % g.kernel[i];
              trest /= g.kernel[i];
            }
            for (int a = 0; a < axes; ++a) {
              const auto i = static_cast<std::size_t>(a);
              const std::int64_t p = out_pos[i] * g.stride[i] - g.pad[i] + tap[i] * g.dilation[i];
              inside = inside && p >= 0 && p < g.in_size[i];
              offset = offset * g.in_size[i] + p;
            }
            // Padding reads the zero point: it stands for a real 0.
            const double xq = inside ? q[static_cast<std::size_t>(channel * in_spatial + offset)] : zero;
            const double wq = w[(oc * in_group + ic) * taps + t];
            acc += static_cast<std::int64_t>(xq - zero) * static_cast<std::int64_t>(wq - w_zero[oc]);
          }
        }
        double value = static_cast<double>(acc);
        if (quant_.output != QuantizedConvParams::Output::accumulator) {
          value = value * scale * w_scale[oc] + (bias ? bias[oc] : 0.0);
          if (quant_.relu) value = std::max(value, 0.0);
          if (quant_.output == QuantizedConvParams::Output::quantized ||
              quant_.output == QuantizedConvParams::Output::dequantized)
            value = quantize_value(value, quant_.output_scale, quant_.output_zero_point, quant_.output_range);
          if (quant_.output == QuantizedConvParams::Output::dequantized)
            value = (value - quant_.output_zero_point) * quant_.output_scale;
        }
        y[(n * g.out_channels + oc) * out_spatial + o] = static_cast<float>(value);
      }
    }
  }
}

std::optional<Int8ConvWeights> QuantizedConvolutionLayer::int8_weights(const ConvGeometry& g) const {
  check_weights();
  const float* w = weights()[0].data<float>();
  const float* scale = weights()[1].data<float>();
  const float* zero = weights()[2].data<float>();
  const std::int64_t depth = g.in_channels / g.group * g.kernel_spatial();
  Int8ConvWeights out;
  out.values.resize(static_cast<std::size_t>(g.out_channels * depth));
  for (std::int64_t oc = 0; oc < g.out_channels; ++oc) {
    for (std::int64_t p = 0; p < depth; ++p) {
      const float v = w[oc * depth + p] - zero[oc];
      if (v < -128 || v > 127) return std::nullopt;
      out.values[static_cast<std::size_t>(oc * depth + p)] = static_cast<std::int8_t>(v);
    }
  }
  out.scale.assign(scale, scale + g.out_channels);
  if (conv_.bias) out.bias.assign(weights()[3].data<float>(), weights()[3].data<float>() + g.out_channels);
  return out;
}

Int8ConvWeights quantize_convolution_weights(const ConvolutionLayer& conv, const ConvGeometry& g) {
  const float* w = conv.weights()[0].data<float>();
  const std::int64_t depth = g.in_channels / g.group * g.kernel_spatial();
  Int8ConvWeights out;
  out.values.resize(static_cast<std::size_t>(g.out_channels * depth));
  out.scale.resize(static_cast<std::size_t>(g.out_channels));
  for (std::int64_t oc = 0; oc < g.out_channels; ++oc) {
    double top = 0;
    for (std::int64_t p = 0; p < depth; ++p)
      top = std::max(top, std::abs(static_cast<double>(w[oc * depth + p])));
    const double s = top > 0 ? top / 127.0 : 1.0;
    out.scale[static_cast<std::size_t>(oc)] = s;
    for (std::int64_t p = 0; p < depth; ++p)
      out.values[static_cast<std::size_t>(oc * depth + p)] =
          static_cast<std::int8_t>(std::clamp(std::nearbyint(w[oc * depth + p] / s), -127.0, 127.0));
  }
  if (conv.has_bias())
    out.bias.assign(conv.weights()[1].data<float>(), conv.weights()[1].data<float>() + g.out_channels);
  return out;
}

}  // namespace espresso
