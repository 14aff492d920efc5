#include "layers/sigmoid_cross_entropy_loss.h"

#include <algorithm>
#include <cmath>

namespace espresso {

const LayerSchema& SigmoidCrossEntropyLossLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "ignore_label", .type = AttrType::integer, .default_text = "none"},
              // Caffe's default for this loss, unlike SoftmaxWithLoss's.
              loss_normalization_attribute(LossNormalization::batch_size),
          },
      .weights = "–",
      .notes =
          "inputs: logits, targets in [0, 1] of one element count; output: −Σ [t·log σ(x) + (1 − t)·log(1 − "
          "σ(x))] / normalizer; targets take no gradient",
  };
  return schema;
}

SigmoidCrossEntropyLossLayer::SigmoidCrossEntropyLossLayer(const LayerSpec& spec)
    : Layer(spec), normalization_(loss_normalization(spec.attrs)) {
  if (spec.attrs.has("ignore_label")) ignore_label_ = spec.attrs.require_int("ignore_label");
}

std::vector<Shape> SigmoidCrossEntropyLossLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, 2);
  if (inputs[0].rank() == 0) fail_shape("the logits need a batch axis, got a scalar");
  if (inputs[0].numel() != inputs[1].numel()) {
    fail_shape("logits " + inputs[0].str() + " and targets " + inputs[1].str() +
               " have different element counts");
  }
  return {Shape{}};
}

double SigmoidCrossEntropyLossLayer::normalizer(const Shape& logits, std::int64_t valid) const {
  return loss_normalizer(normalization_, valid, logits[0], logits.numel());
}

void SigmoidCrossEntropyLossLayer::forward(const std::vector<Tensor>& inputs,
                                           std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  const float* t = inputs[1].data<float>();
  double loss = 0;
  std::int64_t valid = 0;
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) {
    if (ignored(t[i])) continue;
    // −[t·log σ(x) + (1 − t)·log(1 − σ(x))] = max(x, 0) − t·x + log(1 + exp(−|x|)), which never
    // overflows.
    const double v = x[i];
    loss += std::max(v, 0.0) - t[i] * v + std::log1p(std::exp(-std::abs(v)));
    ++valid;
  }
  outputs[0].data<float>()[0] = static_cast<float>(loss / normalizer(inputs[0].shape(), valid));
}

void SigmoidCrossEntropyLossLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                                            const std::vector<Tensor>& output_grads,
                                            std::vector<Tensor>& input_grads, std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* x = inputs[0].data<float>();
  const float* t = inputs[1].data<float>();
  const std::int64_t n = inputs[0].numel();
  std::int64_t valid = 0;
  for (std::int64_t i = 0; i < n; ++i) valid += ignored(t[i]) ? 0 : 1;
  const auto scale =
      static_cast<float>(output_grads[0].data<float>()[0] / normalizer(inputs[0].shape(), valid));
  float* dx = input_grads[0].data<float>();
  for (std::int64_t i = 0; i < n; ++i) {
    if (!ignored(t[i])) dx[i] += scale * (1.0f / (1.0f + std::exp(-x[i])) - t[i]);
  }
}

}  // namespace espresso
