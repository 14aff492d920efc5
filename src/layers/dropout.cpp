#include "layers/dropout.h"

#include <algorithm>

#include "layers/dropout_mask.h"

namespace espresso {

const LayerSchema& DropoutLayer::schema() {
  static const LayerSchema schema{
      .attributes = {{.name = "ratio", .type = AttrType::number, .fallback = 0.5, .min = 0, .max = 1}},
      .weights = "–",
      .notes =
          "identity at inference; training keeps each unit with probability 1 − ratio (mask seeded from "
          "`NetOptions::seed`, a new one each forward, the same on the CPU and the GPU) and scales kept "
          "units by 1/(1 − ratio); ratio < 1; in place",
  };
  return schema;
}

DropoutLayer::DropoutLayer(const LayerSpec& spec)
    : UnaryLayer(spec), ratio_(static_cast<float>(spec.attrs.require_float("ratio"))) {
  // The schema's bounds are inclusive; ratio 1 would drop every unit and scale by 1/0.
  if (ratio_ == 1.0f) fail_model("attribute 'ratio' must be below 1");
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
    for (std::size_t i = 0; i < n; ++i) dx[i] = (dx == dy ? 0.0f : dx[i]) + dy[i];
    return;
  }
  if (mask_.size() != n) fail_shape("backward needs a training forward on an input of the same size first");
  const float scale = 1.0f / (1.0f - ratio_);
  if (dx == dy) {  // in place (backward_in_place)
    for (std::size_t i = 0; i < n; ++i) dx[i] = 0.0f + (mask_[i] ? dy[i] * scale : 0.0f);
    return;
  }
  for (std::size_t i = 0; i < n; ++i) dx[i] += mask_[i] ? dy[i] * scale : 0.0f;
}

}  // namespace espresso
