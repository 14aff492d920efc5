#include "layers/deconvolution.h"

namespace espresso {

const LayerSchema& DeconvolutionLayer::schema() {
  static const LayerSchema schema = [] {
    LayerSchema s{
        .attributes = ConvParams::attributes(),
        .weights = "W: C x num_output/group x k..., b",
        .notes = "out = stride·(in−1) + dilation·(k−1) + 1 − 2·pad + output_pad; output_pad < stride or < dilation",
    };
    s.attributes.push_back(
        {.name = "output_pad", .type = AttrType::integers, .fallback = std::vector<std::int64_t>{0}, .min = 0});
    return s;
  }();
  return schema;
}

DeconvolutionLayer::DeconvolutionLayer(const LayerSpec& spec)
    : Layer(spec), params_(spec.attrs), output_pad_(spec.attrs, "output_pad", {}, 0) {
  if (common_axis_count({&params_.kernel, &params_.stride, &params_.pad, &params_.dilation, &output_pad_}) <
      0) {
    fail_model(
        "attributes 'kernel', 'stride', 'pad', 'dilation' and 'output_pad' give different numbers of axes");
  }
  const int axes = common_axis_count({&params_.stride, &params_.dilation, &output_pad_});
  for (int a = 0; a < axes; ++a) {
    // Larger output padding would add output positions that no input reaches (ONNX's rule).
    if (output_pad_[a] >= params_.stride[a] && output_pad_[a] >= params_.dilation[a]) {
      fail_model("output_pad " + std::to_string(output_pad_[a]) + " must be smaller than the stride " +
                 std::to_string(params_.stride[a]) + " or the dilation " +
                 std::to_string(params_.dilation[a]));
    }
  }
}

ConvGeometry DeconvolutionLayer::geometry(const Shape& input) const {
  ConvGeometry g = params_.resolve(*this, input);
  if (!output_pad_.fits(g.axes())) {
    fail_shape("attribute 'output_pad' has " + std::to_string(output_pad_.count()) + " values for " +
               std::to_string(g.axes()) + " spatial axes of input " + input.str());
  }
  g.out_channels = params_.num_output;
  for (int a = 0; a < g.axes(); ++a) {
    const auto i = static_cast<std::size_t>(a);
    const std::int64_t size = g.stride[i] * (g.in_size[i] - 1) + g.dilation[i] * (g.kernel[i] - 1) + 1 -
                              2 * g.pad[i] + output_pad_[a];
    if (size < 1) {
      fail_shape("padding " + std::to_string(g.pad[i]) + " leaves no output on spatial axis " +
                 std::to_string(a) + " of " + input.str());
    }
    g.out_size.push_back(size);
  }
  return g;
}

std::vector<Shape> DeconvolutionLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  return {geometry(inputs[0]).output_shape()};
}

std::vector<Shape> DeconvolutionLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const ConvGeometry g = geometry(inputs[0]);
  return params_.weight_shapes(g, g.in_channels, g.out_channels / g.group);
}

std::int64_t DeconvolutionLayer::macs(const std::vector<Shape>& inputs) const {
  const ConvGeometry g = geometry(inputs[0]);
  return g.batch * g.in_spatial() * g.in_channels * (g.out_channels / g.group) * g.kernel_spatial();
}

void DeconvolutionLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const ConvGeometry g = geometry(inputs[0].shape());
  const float* x = inputs[0].data<float>();
  const float* w = weights()[0].data<float>();
  const float* b = params_.bias ? weights()[1].data<float>() : nullptr;
  float* y = outputs[0].data<float>();

  const std::int64_t in_group = g.in_channels / g.group;
  const std::int64_t out_group = g.out_channels / g.group;
  const std::int64_t out_spatial = g.out_spatial();
  const std::int64_t taps = g.kernel_spatial();
  const auto tap_coords = box_coordinates(g.kernel);
  const auto in_coords = box_coordinates(g.in_size);
  const int axes = g.axes();

  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (std::int64_t co = 0; co < g.out_channels; ++co) {
      for (std::int64_t o = 0; o < out_spatial; ++o)
        y[(n * g.out_channels + co) * out_spatial + o] = b ? b[co] : 0.0f;
    }
    for (std::int64_t ci = 0; ci < g.in_channels; ++ci) {
      const std::int64_t first_out = ci / in_group * out_group;
      for (std::size_t i = 0; i < in_coords.size(); ++i) {
        const float value = x[(n * g.in_channels + ci) * static_cast<std::int64_t>(in_coords.size()) +
                              static_cast<std::int64_t>(i)];
        for (std::int64_t co = 0; co < out_group; ++co) {
          const float* filter = w + (ci * out_group + co) * taps;
          float* plane = y + (n * g.out_channels + first_out + co) * out_spatial;
          for (std::int64_t t = 0; t < taps; ++t) {
            std::int64_t offset = 0;
            bool inside = true;
            for (int a = 0; a < axes; ++a) {
              const auto k = static_cast<std::size_t>(a);
              const std::int64_t pos = in_coords[i][k] * g.stride[k] - g.pad[k] +
                                       tap_coords[static_cast<std::size_t>(t)][k] * g.dilation[k];
              inside = inside && pos >= 0 && pos < g.out_size[k];
              offset = offset * g.out_size[k] + pos;
            }
            if (inside) plane[offset] += value * filter[t];
          }
        }
      }
    }
  }
}

void DeconvolutionLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                                  const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                                  std::vector<Tensor>& weight_grads) const {
  const ConvGeometry g = geometry(inputs[0].shape());
  const float* x = inputs[0].data<float>();
  const float* w = weights()[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
  float* dw = weight_grads[0].data<float>();
  float* db = params_.bias ? weight_grads[1].data<float>() : nullptr;

  const std::int64_t in_group = g.in_channels / g.group;
  const std::int64_t out_group = g.out_channels / g.group;
  const std::int64_t out_spatial = g.out_spatial();
  const std::int64_t taps = g.kernel_spatial();
  const auto tap_coords = box_coordinates(g.kernel);
  const auto in_coords = box_coordinates(g.in_size);
  const auto in_spatial = static_cast<std::int64_t>(in_coords.size());
  const int axes = g.axes();

  // The forward's scatter, each multiply-add sending its output gradient back to both factors.
  for (std::int64_t n = 0; n < g.batch; ++n) {
    if (db) {
      for (std::int64_t co = 0; co < g.out_channels; ++co) {
        for (std::int64_t o = 0; o < out_spatial; ++o)
          db[co] += dy[(n * g.out_channels + co) * out_spatial + o];
      }
    }
    for (std::int64_t ci = 0; ci < g.in_channels; ++ci) {
      const std::int64_t first_out = ci / in_group * out_group;
      for (std::int64_t i = 0; i < in_spatial; ++i) {
        const std::int64_t at = (n * g.in_channels + ci) * in_spatial + i;
        for (std::int64_t co = 0; co < out_group; ++co) {
          const std::int64_t filter = (ci * out_group + co) * taps;
          const float* plane = dy + (n * g.out_channels + first_out + co) * out_spatial;
          for (std::int64_t t = 0; t < taps; ++t) {
            std::int64_t offset = 0;
            bool inside = true;
            for (int a = 0; a < axes; ++a) {
              const auto k = static_cast<std::size_t>(a);
              const std::int64_t pos = in_coords[static_cast<std::size_t>(i)][k] * g.stride[k] - g.pad[k] +
                                       tap_coords[static_cast<std::size_t>(t)][k] * g.dilation[k];
              inside = inside && pos >= 0 && pos < g.out_size[k];
              offset = offset * g.out_size[k] + pos;
            }
            if (!inside) continue;
            dw[filter + t] += plane[offset] * x[at];
            if (dx) dx[at] += plane[offset] * w[filter + t];
          }
        }
      }
    }
  }
}

}  // namespace espresso
