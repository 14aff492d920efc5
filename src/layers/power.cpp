#include "layers/power.h"

#include <cmath>

namespace espresso {

PowerLayer::PowerLayer(const LayerSpec& spec)
    : UnaryLayer(spec),
      power_(static_cast<float>(spec.attrs.get_float("power", 1.0))),
      scale_(static_cast<float>(spec.attrs.get_float("scale", 1.0))),
      shift_(static_cast<float>(spec.attrs.get_float("shift", 0.0))) {
  if (!std::isfinite(power_) || !std::isfinite(scale_) || !std::isfinite(shift_)) {
    fail_model("attributes 'power', 'scale' and 'shift' must be finite");
  }
}

void PowerLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) y[i] = std::pow(shift_ + scale_ * x[i], power_);
}

void PowerLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                          const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                          std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* x = inputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) {
    const float slope =
        power_ == 1.0f ? scale_ : power_ * scale_ * std::pow(shift_ + scale_ * x[i], power_ - 1.0f);
    dx[i] += dy[i] * slope;
  }
}

}  // namespace espresso
