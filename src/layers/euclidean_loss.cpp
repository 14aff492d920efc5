#include "layers/euclidean_loss.h"

namespace espresso {

const LayerSchema& EuclideanLossLayer::schema() {
  static const LayerSchema schema{
      .attributes = {},
      .weights = "–",
      .notes =
          "inputs: two of one element count; output: Σ(a − b)² / (2·N), N = dimension 0; both inputs take "
          "gradients",
  };
  return schema;
}

std::vector<Shape> EuclideanLossLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, 2);
  if (inputs[0].rank() == 0) fail_shape("input 0 needs a batch axis, got a scalar");
  if (inputs[0].numel() != inputs[1].numel()) {
    fail_shape("inputs " + inputs[0].str() + " and " + inputs[1].str() + " have different element counts");
  }
  return {Shape{}};
}

void EuclideanLossLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* a = inputs[0].data<float>();
  const float* b = inputs[1].data<float>();
  double sum = 0;
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    sum += d * d;
  }
  const auto batch = static_cast<double>(inputs[0].shape()[0]);
  outputs[0].data<float>()[0] = static_cast<float>(batch == 0 ? 0.0 : sum / (2 * batch));
}

void EuclideanLossLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                                  const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                                  std::vector<Tensor>&) const {
  const std::int64_t batch = inputs[0].shape()[0];
  if (batch == 0) return;
  const float scale = output_grads[0].data<float>()[0] / static_cast<float>(batch);
  const float* a = inputs[0].data<float>();
  const float* b = inputs[1].data<float>();
  float* da = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
  float* db = input_grads[1].defined() ? input_grads[1].data<float>() : nullptr;
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) {
    const float g = scale * (a[i] - b[i]);
    if (da) da[i] += g;
    if (db) db[i] -= g;
  }
}

}  // namespace espresso
