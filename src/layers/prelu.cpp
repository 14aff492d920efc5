#include "layers/prelu.h"

namespace espresso {

const LayerSchema& PReLULayer::schema() {
  static const LayerSchema schema{
      .attributes = {flag("channel_shared", false)},
      .weights = "slope: C (or 1 if shared)",
      .notes = "in place",
  };
  return schema;
}

PReLULayer::PReLULayer(const LayerSpec& spec)
    : Layer(spec), channel_shared_(spec.attrs.require_int("channel_shared") != 0) {}

std::vector<Shape> PReLULayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  if (inputs[0].rank() < 2) fail_shape("input must have a channel axis, got shape " + inputs[0].str());
  return {inputs[0]};
}

std::vector<Shape> PReLULayer::weight_shapes(const std::vector<Shape>& inputs) const {
  return {Shape{channel_shared_ ? 1 : inputs[0][1]}};
}

void PReLULayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& shape = inputs[0].shape();
  const std::int64_t channels = shape[1], inner = shape.count(2);
  const float* x = inputs[0].data<float>();
  const float* slope = weights()[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = shape.numel(); i < n; ++i) {
    const float a = slope[channel_shared_ ? 0 : (i / inner) % channels];
    y[i] = x[i] > 0 ? x[i] : a * x[i];
  }
}

void PReLULayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                          const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                          std::vector<Tensor>& weight_grads) const {
  const Shape& shape = inputs[0].shape();
  const std::int64_t channels = shape[1], inner = shape.count(2);
  const float* x = inputs[0].data<float>();
  const float* slope = weights()[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
  float* dslope = weight_grads[0].data<float>();
  for (std::int64_t i = 0, n = shape.numel(); i < n; ++i) {
    const std::int64_t c = channel_shared_ ? 0 : (i / inner) % channels;
    if (dx) dx[i] += x[i] > 0 ? dy[i] : slope[c] * dy[i];
    if (x[i] <= 0) dslope[c] += dy[i] * x[i];
  }
}

}  // namespace espresso
