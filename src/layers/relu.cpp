#include "layers/relu.h"

namespace espresso {

const LayerSchema& ReLULayer::schema() {
  static const LayerSchema schema{
      .attributes = {{.name = "negative_slope", .type = AttrType::number, .fallback = 0.0}},
      .weights = "–",
      .notes = "in place",
  };
  return schema;
}

ReLULayer::ReLULayer(const LayerSpec& spec)
    : Layer(spec), negative_slope_(static_cast<float>(spec.attrs.require_float("negative_slope"))) {}

std::vector<Shape> ReLULayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  return {inputs[0]};
}

void ReLULayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) {
    y[i] = x[i] > 0 ? x[i] : negative_slope_ * x[i];
  }
}

void ReLULayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                         const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                         std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* x = inputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  const std::int64_t n = inputs[0].numel();
  if (dx == dy) {  // in place (backward_in_place)
    for (std::int64_t i = 0; i < n; ++i) dx[i] = 0.0f + (x[i] > 0 ? dy[i] : negative_slope_ * dy[i]);
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) dx[i] += x[i] > 0 ? dy[i] : negative_slope_ * dy[i];
}

}  // namespace espresso
