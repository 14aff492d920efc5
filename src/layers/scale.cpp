#include "layers/scale.h"

namespace espresso {

const LayerSchema& ScaleLayer::schema() {
  static const LayerSchema schema = [] {
    LayerSchema s{
        .attributes = AxesBroadcastLayer::attributes(),
        .weights = "scale: shape of the covered axes (absent with 2 inputs), b (if bias)",
        .notes = "the scale may come as a second input; in place",
    };
    s.attributes.push_back(
        flag("bias", false));
    return s;
  }();
  return schema;
}

ScaleLayer::ScaleLayer(const LayerSpec& spec)
    : AxesBroadcastLayer(spec), bias_(spec.attrs.require_int("bias") != 0) {}

std::vector<Shape> ScaleLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  const Shape parameter = parameter_shape(inputs);
  std::vector<Shape> shapes;
  if (inputs.size() == 1) shapes.push_back(parameter);
  if (bias_) shapes.push_back(parameter);
  return shapes;
}

const float* ScaleLayer::scale_data(const std::vector<Tensor>& inputs) const {
  return inputs.size() == 2 ? inputs[1].data<float>() : weights()[0].data<float>();
}

const float* ScaleLayer::bias_data() const { return bias_ ? weights().back().data<float>() : nullptr; }

void ScaleLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const AxisSplit s = split(shapes_of(inputs));
  const float* scale = scale_data(inputs);
  const float* bias = bias_data();
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) {
    const std::int64_t c = (i / s.inner) % s.channels;
    y[i] = x[i] * scale[c] + (bias ? bias[c] : 0.0f);
  }
}

void ScaleLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                          const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                          std::vector<Tensor>& weight_grads) const {
  const AxisSplit s = split(shapes_of(inputs));
  const float* scale = scale_data(inputs);
  const float* x = inputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
  Tensor& scale_grad = inputs.size() == 2 ? input_grads[1] : weight_grads[0];
  float* dscale = scale_grad.defined() ? scale_grad.data<float>() : nullptr;
  float* dbias = bias_ ? weight_grads.back().data<float>() : nullptr;
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) {
    const std::int64_t c = (i / s.inner) % s.channels;
    if (dx) dx[i] += dy[i] * scale[c];
    if (dscale) dscale[c] += dy[i] * x[i];
    if (dbias) dbias[c] += dy[i];
  }
}

}  // namespace espresso
