#include "layers/absval.h"

#include <cmath>

namespace espresso {

void AbsValLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) y[i] = std::abs(x[i]);
}

void AbsValLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                           const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                           std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* x = inputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i)
    dx[i] += x[i] > 0 ? dy[i] : x[i] < 0 ? -dy[i] : 0.0f;
}

}  // namespace espresso
