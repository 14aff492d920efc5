#include "layers/inner_product.h"

namespace espresso {

const LayerSchema& InnerProductLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "num_output", .type = AttrType::integer, .required = true, .min = 1},
              flag("bias", true),
              {.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{1}},
              flag("transpose", false),
          },
      .weights = "W: num_output x K (K x num_output if transpose), b: num_output",
      .notes = "input flattened from `axis`",
  };
  return schema;
}

InnerProductLayer::InnerProductLayer(const LayerSpec& spec)
    : Layer(spec),
      num_output_(spec.attrs.require_int("num_output")),
      bias_(spec.attrs.require_int("bias") != 0),
      transpose_(spec.attrs.require_int("transpose") != 0),
      axis_(static_cast<int>(spec.attrs.require_int("axis"))) {}

InnerProductLayer::Dims InnerProductLayer::dims(const Shape& input) const {
  if (input.rank() == 0) fail_shape("needs an input of rank 1 or more, got a scalar");
  int axis = 0;
  try {
    axis = input.canonical_axis(axis_);
  } catch (const ShapeError&) {
    fail_shape("axis " + std::to_string(axis_) + " is out of range for input " + input.str());
  }
  return {axis, input.count(0, axis), input.count(axis), num_output_};
}

std::vector<Shape> InnerProductLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const Dims d = dims(inputs[0]);
  std::vector<std::int64_t> out(inputs[0].dims().begin(), inputs[0].dims().begin() + d.axis);
  out.push_back(num_output_);
  return {Shape(out)};
}

std::vector<Shape> InnerProductLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const Dims d = dims(inputs[0]);
  std::vector<Shape> shapes{transpose_ ? Shape{d.inner, d.outputs} : Shape{d.outputs, d.inner}};
  if (bias_) shapes.push_back(Shape{d.outputs});
  return shapes;
}

std::int64_t InnerProductLayer::macs(const std::vector<Shape>& inputs) const {
  const Dims d = dims(inputs[0]);
  return d.rows * d.inner * d.outputs;
}

void InnerProductLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Dims d = dims(inputs[0].shape());
  const float* x = inputs[0].data<float>();
  const float* w = weights()[0].data<float>();
  const float* b = bias_ ? weights()[1].data<float>() : nullptr;
  float* y = outputs[0].data<float>();
  for (std::int64_t m = 0; m < d.rows; ++m) {
    for (std::int64_t n = 0; n < d.outputs; ++n) {
      float sum = b ? b[n] : 0.0f;
      for (std::int64_t k = 0; k < d.inner; ++k) {
        sum += x[m * d.inner + k] * (transpose_ ? w[k * d.outputs + n] : w[n * d.inner + k]);
      }
      y[m * d.outputs + n] = sum;
    }
  }
}

void InnerProductLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                                 const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                                 std::vector<Tensor>& weight_grads) const {
  const Dims d = dims(inputs[0].shape());
  const float* x = inputs[0].data<float>();
  const float* w = weights()[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
  float* dw = weight_grads[0].data<float>();
  float* db = bias_ ? weight_grads[1].data<float>() : nullptr;
  for (std::int64_t m = 0; m < d.rows; ++m) {
    for (std::int64_t n = 0; n < d.outputs; ++n) {
      const float g = dy[m * d.outputs + n];
      if (db) db[n] += g;
      for (std::int64_t k = 0; k < d.inner; ++k) {
        const std::int64_t at = transpose_ ? k * d.outputs + n : n * d.inner + k;
        dw[at] += g * x[m * d.inner + k];
        if (dx) dx[m * d.inner + k] += g * w[at];
      }
    }
  }
}

}  // namespace espresso
