#include "layers/split.h"

#include <algorithm>

namespace espresso {

const LayerSchema& SplitLayer::schema() {
  static const LayerSchema schema{
      .attributes = {}, .weights = "–", .notes = "copies its input to every output"};
  return schema;
}

SplitLayer::SplitLayer(const LayerSpec& spec) : Layer(spec) {
  if (spec.outputs.empty()) fail_model("needs at least one output");
}

std::vector<Shape> SplitLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  return std::vector<Shape>(spec().outputs.size(), inputs[0]);
}

void SplitLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  for (Tensor& output : outputs) {
    float* y = output.data<float>();
    if (y != x) std::copy(x, x + inputs[0].numel(), y);
  }
}

void SplitLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                          const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                          std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  float* dx = input_grads[0].data<float>();
  for (const Tensor& grad : output_grads) {
    const float* dy = grad.data<float>();
    for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) dx[i] += dy[i];
  }
}

}  // namespace espresso
