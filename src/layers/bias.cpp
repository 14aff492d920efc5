#include "layers/bias.h"

namespace espresso {

const LayerSchema& BiasLayer::schema() {
  static const LayerSchema schema{
      .attributes = AxesBroadcastLayer::attributes(),
      .weights = "b (absent with 2 inputs)",
      .notes = "the bias may come as a second input; in place",
  };
  return schema;
}

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

void BiasLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                         const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                         std::vector<Tensor>& weight_grads) const {
  const AxisSplit s = split(shapes_of(inputs));
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
  Tensor& bias_grad = inputs.size() == 2 ? input_grads[1] : weight_grads[0];
  float* dbias = bias_grad.defined() ? bias_grad.data<float>() : nullptr;
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) {
    if (dx) dx[i] += dy[i];
    if (dbias) dbias[(i / s.inner) % s.channels] += dy[i];
  }
}

}  // namespace espresso
