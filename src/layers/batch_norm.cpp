#include "layers/batch_norm.h"

#include <cmath>

namespace espresso {

BatchNormLayer::BatchNormLayer(const LayerSpec& spec)
    : Layer(spec), eps_(static_cast<float>(spec.attrs.get_float("eps", 1e-5))) {
  if (!(eps_ >= 0.0f)) fail_model("attribute 'eps' must be non-negative, got " + std::to_string(eps_));
}

std::vector<Shape> BatchNormLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  if (inputs[0].rank() < 1) fail_shape("input must have at least one axis, got a scalar");
  return {inputs[0]};
}

std::int64_t BatchNormLayer::channels(const Shape& input) { return input.rank() < 2 ? 1 : input[1]; }

std::vector<Shape> BatchNormLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  return {Shape{channels(inputs[0])}, Shape{channels(inputs[0])}, Shape{1}};
}

void BatchNormLayer::affine(std::vector<float>& multiplier, std::vector<float>& offset) const {
  const Tensor& mean = weights()[0];
  const float stored_factor = weights()[2].data<float>()[0];
  const float factor = stored_factor == 0.0f ? 0.0f : 1.0f / stored_factor;
  const float* m = mean.data<float>();
  const float* v = weights()[1].data<float>();
  multiplier.resize(static_cast<std::size_t>(mean.numel()));
  offset.resize(multiplier.size());
  for (std::size_t c = 0; c < multiplier.size(); ++c) {
    multiplier[c] = 1.0f / std::sqrt(v[c] * factor + eps_);
    offset[c] = -m[c] * factor * multiplier[c];
  }
}

void BatchNormLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& shape = inputs[0].shape();
  const std::int64_t channel_count = channels(shape), inner = shape.count(2);
  const float stored_factor = weights()[2].data<float>()[0];
  const float factor = stored_factor == 0.0f ? 0.0f : 1.0f / stored_factor;
  const float* mean = weights()[0].data<float>();
  const float* variance = weights()[1].data<float>();
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = shape.numel(); i < n; ++i) {
    const std::int64_t c = (i / inner) % channel_count;
    y[i] = (x[i] - mean[c] * factor) / std::sqrt(variance[c] * factor + eps_);
  }
}

}  // namespace espresso
