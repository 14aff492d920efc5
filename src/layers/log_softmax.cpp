#include "layers/log_softmax.h"

#include <algorithm>
#include <cmath>

namespace espresso {

const LayerSchema& LogSoftmaxLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{1}},
          },
      .weights = "–",
      .notes = "",
  };
  return schema;
}

std::vector<Shape> LogSoftmaxLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  if (axis_ < -inputs[0].rank() || axis_ >= inputs[0].rank()) {
    fail_shape("axis " + std::to_string(axis_) + " is out of range for " + inputs[0].str());
  }
  return {inputs[0]};
}

void LogSoftmaxLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& shape = inputs[0].shape();
  const int axis = shape.canonical_axis(axis_);
  const std::int64_t outer = shape.count(0, axis), size = shape[axis], inner = shape.count(axis + 1);
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t i = 0; i < inner; ++i) {
      const float* xs = x + o * size * inner + i;
      float* ys = y + o * size * inner + i;
      float peak = xs[0];
      for (std::int64_t k = 1; k < size; ++k) peak = std::max(peak, xs[k * inner]);
      double sum = 0;
      for (std::int64_t k = 0; k < size; ++k) sum += std::exp(static_cast<double>(xs[k * inner] - peak));
      const auto log_sum = static_cast<float>(std::log(sum));
      for (std::int64_t k = 0; k < size; ++k) ys[k * inner] = xs[k * inner] - peak - log_sum;
    }
  }
}

void LogSoftmaxLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                               const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                               std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const Shape& shape = inputs[0].shape();
  const int axis = shape.canonical_axis(axis_);
  const std::int64_t outer = shape.count(0, axis), size = shape[axis], inner = shape.count(axis + 1);
  const float* y = outputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  // dx = dy − softmax · Σ dy, with softmax = exp(y).
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t i = 0; i < inner; ++i) {
      const std::int64_t base = o * size * inner + i;
      double sum = 0;
      for (std::int64_t k = 0; k < size; ++k) sum += dy[base + k * inner];
      for (std::int64_t k = 0; k < size; ++k) {
        const std::int64_t at = base + k * inner;
        dx[at] += static_cast<float>(dy[at] - std::exp(static_cast<double>(y[at])) * sum);
      }
    }
  }
}

}  // namespace espresso
