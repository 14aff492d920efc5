#include "layers/softmax.h"

#include <algorithm>
#include <cmath>

namespace espresso {

void softmax_reference(const float* x, float* y, const AxisSplit& split) {
  const auto [outer, channels, inner] = split;
  if (channels == 0) return;
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t i = 0; i < inner; ++i) {
      const std::int64_t base = o * channels * inner + i;
      float max = x[base];
      for (std::int64_t c = 1; c < channels; ++c) max = std::max(max, x[base + c * inner]);
      float sum = 0;
      for (std::int64_t c = 0; c < channels; ++c) {
        y[base + c * inner] = std::exp(x[base + c * inner] - max);
        sum += y[base + c * inner];
      }
      for (std::int64_t c = 0; c < channels; ++c) y[base + c * inner] /= sum;
    }
  }
}

void softmax_backward_reference(const float* y, const float* dy, float* dx, const AxisSplit& split) {
  const auto [outer, channels, inner] = split;
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t i = 0; i < inner; ++i) {
      const std::int64_t base = o * channels * inner + i;
      float dot = 0;
      for (std::int64_t c = 0; c < channels; ++c) dot += dy[base + c * inner] * y[base + c * inner];
      for (std::int64_t c = 0; c < channels; ++c) {
        dx[base + c * inner] += y[base + c * inner] * (dy[base + c * inner] - dot);
      }
    }
  }
}

const LayerSchema& SoftmaxLayer::schema() {
  static const LayerSchema schema{
      .attributes = {{.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{1}}},
      .weights = "–",
      .notes = "",
  };
  return schema;
}

SoftmaxLayer::SoftmaxLayer(const LayerSpec& spec) : Layer(spec), axis_(spec.attrs.require_int("axis")) {}

std::vector<Shape> SoftmaxLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  if (!resolve_axis(axis_, inputs[0].rank())) {
    fail_shape("axis " + std::to_string(axis_) + " is out of range for input shape " + inputs[0].str());
  }
  return {inputs[0]};
}

AxisSplit SoftmaxLayer::split(const Shape& input) const {
  const int axis = *resolve_axis(axis_, input.rank());
  return split_at(input, axis, axis + 1);
}

void SoftmaxLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  softmax_reference(inputs[0].data<float>(), outputs[0].data<float>(), split(inputs[0].shape()));
}

void SoftmaxLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                            const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                            std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  softmax_backward_reference(outputs[0].data<float>(), output_grads[0].data<float>(),
                             input_grads[0].data<float>(), split(inputs[0].shape()));
}

}  // namespace espresso
