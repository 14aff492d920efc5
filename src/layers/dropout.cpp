#include "layers/dropout.h"

#include <algorithm>

#include "layers/dropout_mask.h"

namespace espresso {

DropoutLayer::DropoutLayer(const LayerSpec& spec)
    : UnaryLayer(spec), ratio_(static_cast<float>(spec.attrs.get_float("ratio", 0.5))) {
  if (!(ratio_ >= 0.0f && ratio_ < 1.0f)) {
    fail_model("attribute 'ratio' must lie in [0, 1), got " + std::to_string(ratio_));
  }
}

void DropoutLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  if (!training()) {
    if (x != y) std::copy(x, x + inputs[0].numel(), y);
    return;
  }
  // Each forward gets its own stream, so masks differ between iterations yet repeat between runs.
  const std::uint64_t stream = dropout_stream(seed(), ++draws_);
  const float scale = 1.0f / (1.0f - ratio_);
  mask_.resize(static_cast<std::size_t>(inputs[0].numel()));
  for (std::size_t i = 0; i < mask_.size(); ++i) {
    mask_[i] = dropout_keeps(stream, i, ratio_) ? 1 : 0;
    y[i] = mask_[i] ? x[i] * scale : 0.0f;
  }
}

void DropoutLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                            const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                            std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  const auto n = static_cast<std::size_t>(inputs[0].numel());
  if (!training()) {
    for (std::size_t i = 0; i < n; ++i) dx[i] += dy[i];
    return;
  }
  if (mask_.size() != n) fail_shape("backward needs a training forward on an input of the same size first");
  const float scale = 1.0f / (1.0f - ratio_);
  for (std::size_t i = 0; i < n; ++i) dx[i] += mask_[i] ? dy[i] * scale : 0.0f;
}

}  // namespace espresso
