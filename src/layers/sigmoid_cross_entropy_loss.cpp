#include "layers/sigmoid_cross_entropy_loss.h"

#include <algorithm>
#include <cmath>

namespace espresso {

SigmoidCrossEntropyLossLayer::SigmoidCrossEntropyLossLayer(const LayerSpec& spec)
    : Layer(spec), normalization_(LossNormalization::batch_size) {
  const std::string normalization = spec.attrs.get_string("normalization", "batch_size");
  if (normalization == "valid") {
    normalization_ = LossNormalization::valid;
  } else if (normalization == "full") {
    normalization_ = LossNormalization::full;
  } else if (normalization == "none") {
    normalization_ = LossNormalization::none;
  } else if (normalization != "batch_size") {
    fail_model("attribute 'normalization' must be \"valid\", \"batch_size\", \"full\" or \"none\", got \"" +
               normalization + "\"");
  }
  if (spec.attrs.has("ignore_label")) ignore_label_ = spec.attrs.get_int("ignore_label", 0);
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
