#include "layers/convolution.h"

namespace espresso {

std::int64_t ConvGeometry::in_spatial() const { return dims_product(in_size); }
std::int64_t ConvGeometry::out_spatial() const { return dims_product(out_size); }
std::int64_t ConvGeometry::kernel_spatial() const { return dims_product(kernel); }

Shape ConvGeometry::output_shape() const {
  std::vector<std::int64_t> dims{batch, out_channels};
  dims.insert(dims.end(), out_size.begin(), out_size.end());
  return Shape(dims);
}

std::vector<Shape> ConvParams::weight_shapes(const ConvGeometry& g, std::int64_t rows, std::int64_t columns) const {
  std::vector<std::int64_t> dims{rows, columns};
  dims.insert(dims.end(), g.kernel.begin(), g.kernel.end());
  std::vector<Shape> shapes{Shape(dims)};
  if (bias) shapes.push_back(Shape{g.out_channels});
  return shapes;
}

std::vector<AttrSpec> ConvParams::attributes() {
  using Ints = std::vector<std::int64_t>;
  return {
      {.name = "num_output", .type = AttrType::integer, .required = true, .min = 1},
      {.name = "kernel", .type = AttrType::integers, .required = true, .min = 1},
      {.name = "stride", .type = AttrType::integers, .fallback = Ints{1}, .min = 1},
      {.name = "pad", .type = AttrType::integers, .fallback = Ints{0}, .min = 0},
      {.name = "dilation", .type = AttrType::integers, .fallback = Ints{1}, .min = 1},
      {.name = "group", .type = AttrType::integer, .fallback = std::int64_t{1}, .min = 1},
      flag("bias", true),
  };
}

ConvParams::ConvParams(const Attributes& attrs)
    : num_output(attrs.require_int("num_output")),
      group(attrs.require_int("group")),
      bias(attrs.require_int("bias") != 0),
      kernel(attrs, "kernel", {}, 1),
      stride(attrs, "stride", {}, 1),
      pad(attrs, "pad", {}, 0),
      dilation(attrs, "dilation", {}, 1) {
  if (num_output % group != 0) {
    throw ModelError("num_output " + std::to_string(num_output) + " is not divisible by group " +
                     std::to_string(group));
  }
  if (common_axis_count({&kernel, &stride, &pad, &dilation}) < 0) {
    throw ModelError("attributes 'kernel', 'stride', 'pad' and 'dilation' give different numbers of axes");
  }
}

ConvGeometry ConvParams::resolve(const Layer& layer, const Shape& input) const {
  if (input.rank() < 3) {
    throw ShapeError("layer '" + layer.name() + "' (" + layer.type() +
                     "): expects N x C x spatial... (rank 3 or more), got " + input.str());
  }
  const int axes = input.rank() - 2;
  for (const AxisValues* list : {&kernel, &stride, &pad, &dilation}) {
    if (!list->fits(axes)) {
      throw ShapeError("layer '" + layer.name() + "' (" + layer.type() + "): attribute '" + list->name() +
                       "' has " + std::to_string(list->count()) + " values for " + std::to_string(axes) +
                       " spatial axes of input " + input.str());
    }
  }
  ConvGeometry g;
  g.batch = input[0];
  g.in_channels = input[1];
  g.group = group;
  if (g.in_channels % group != 0) {
    throw ModelError("layer '" + layer.name() + "' (" + layer.type() + "): group " + std::to_string(group) +
                     " does not divide the " + std::to_string(g.in_channels) + " input channels");
  }
  g.in_size.assign(input.dims().begin() + 2, input.dims().end());
  g.kernel = kernel.expand(axes);
  g.stride = stride.expand(axes);
  g.pad = pad.expand(axes);
  g.dilation = dilation.expand(axes);
  return g;
}

const LayerSchema& ConvolutionLayer::schema() {
  static const LayerSchema schema{
      .attributes = ConvParams::attributes(),
      .weights = "W: num_output x C/group x k..., b: num_output (if bias)",
      .notes = "1D, 2D and more spatial axes",
  };
  return schema;
}

ConvolutionLayer::ConvolutionLayer(const LayerSpec& spec) : Layer(spec), params_(spec.attrs) {}

ConvGeometry ConvolutionLayer::geometry(const Shape& input) const {
  ConvGeometry g = params_.resolve(*this, input);
  g.out_channels = params_.num_output;
  for (int a = 0; a < g.axes(); ++a) {
    const auto i = static_cast<std::size_t>(a);
    const std::int64_t padded = g.in_size[i] + 2 * g.pad[i];
    const std::int64_t extent = g.dilation[i] * (g.kernel[i] - 1) + 1;
    if (padded < extent) {
      fail_shape("dilated kernel extent " + std::to_string(extent) + " exceeds the padded input " +
                 std::to_string(padded) + " on spatial axis " + std::to_string(a) + " of " + input.str());
    }
    g.out_size.push_back((padded - extent) / g.stride[i] + 1);
  }
  return g;
}

std::vector<Shape> ConvolutionLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  return {geometry(inputs[0]).output_shape()};
}

std::vector<Shape> ConvolutionLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const ConvGeometry g = geometry(inputs[0]);
  return params_.weight_shapes(g, g.out_channels, g.in_channels / g.group);
}

std::int64_t ConvolutionLayer::macs(const std::vector<Shape>& inputs) const {
  const ConvGeometry g = geometry(inputs[0]);
  return g.batch * g.out_spatial() * g.out_channels * (g.in_channels / g.group) * g.kernel_spatial();
}

void ConvolutionLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const ConvGeometry g = geometry(inputs[0].shape());
  const float* x = inputs[0].data<float>();
  const float* w = weights()[0].data<float>();
  const float* b = params_.bias ? weights()[1].data<float>() : nullptr;
  float* y = outputs[0].data<float>();

  const std::int64_t in_group = g.in_channels / g.group;
  const std::int64_t out_group = g.out_channels / g.group;
  const std::int64_t in_spatial = g.in_spatial();
  const std::int64_t taps = g.kernel_spatial();
  const auto tap_coords = box_coordinates(g.kernel);
  const auto out_coords = box_coordinates(g.out_size);
  const int axes = g.axes();

  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (std::int64_t co = 0; co < g.out_channels; ++co) {
      const std::int64_t first_in = co / out_group * in_group;
      for (std::size_t o = 0; o < out_coords.size(); ++o) {
        float sum = b ? b[co] : 0.0f;
        for (std::int64_t ci = 0; ci < in_group; ++ci) {
          const float* plane = x + (n * g.in_channels + first_in + ci) * in_spatial;
          const float* filter = w + (co * in_group + ci) * taps;
          for (std::int64_t t = 0; t < taps; ++t) {
            std::int64_t offset = 0;
            bool inside = true;
            for (int a = 0; a < axes; ++a) {
              const auto i = static_cast<std::size_t>(a);
              const std::int64_t pos = out_coords[o][i] * g.stride[i] - g.pad[i] +
                                       tap_coords[static_cast<std::size_t>(t)][i] * g.dilation[i];
              inside = inside && pos >= 0 && pos < g.in_size[i];
              offset = offset * g.in_size[i] + pos;
            }
            if (inside) sum += plane[offset] * filter[t];
          }
        }
        y[(n * g.out_channels + co) * static_cast<std::int64_t>(out_coords.size()) +
          static_cast<std::int64_t>(o)] = sum;
      }
    }
  }
}

void ConvolutionLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
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
  const std::int64_t in_spatial = g.in_spatial();
  const std::int64_t taps = g.kernel_spatial();
  const auto tap_coords = box_coordinates(g.kernel);
  const auto out_coords = box_coordinates(g.out_size);
  const auto out_spatial = static_cast<std::int64_t>(out_coords.size());
  const int axes = g.axes();

  // The forward's loops, each multiply-add sending its output gradient back to both factors.
  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (std::int64_t co = 0; co < g.out_channels; ++co) {
      const std::int64_t first_in = co / out_group * in_group;
      for (std::size_t o = 0; o < out_coords.size(); ++o) {
        const float grad = dy[(n * g.out_channels + co) * out_spatial + static_cast<std::int64_t>(o)];
        if (db) db[co] += grad;
        for (std::int64_t ci = 0; ci < in_group; ++ci) {
          const std::int64_t plane = (n * g.in_channels + first_in + ci) * in_spatial;
          const std::int64_t filter = (co * in_group + ci) * taps;
          for (std::int64_t t = 0; t < taps; ++t) {
            std::int64_t offset = 0;
            bool inside = true;
            for (int a = 0; a < axes; ++a) {
              const auto i = static_cast<std::size_t>(a);
              const std::int64_t pos = out_coords[o][i] * g.stride[i] - g.pad[i] +
                                       tap_coords[static_cast<std::size_t>(t)][i] * g.dilation[i];
              inside = inside && pos >= 0 && pos < g.in_size[i];
              offset = offset * g.in_size[i] + pos;
            }
            if (!inside) continue;
            dw[filter + t] += grad * x[plane + offset];
            if (dx) dx[plane + offset] += grad * w[filter + t];
          }
        }
      }
    }
  }
}

}  // namespace espresso
