#include "layers/bias.h"

namespace espresso {

std::vector<Shape> BiasLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  if (inputs.size() == 2) return {};
  return {parameter_shape(inputs)};
}

const float* BiasLayer::bias_data(const std::vector<Tensor>& inputs) const {
  return inputs.size() == 2 ? inputs[1].data<float>() : weights()[0].data<float>();
}

void BiasLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const AxisSplit s = split(shapes_of(inputs));
  const float* bias = bias_data(inputs);
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) y[i] = x[i] + bias[(i / s.inner) % s.channels];
}

}  // namespace espresso
