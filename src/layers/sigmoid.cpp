#include "layers/sigmoid.h"

#include <cmath>

namespace espresso {

void SigmoidLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

void SigmoidLayer::backward(const std::vector<Tensor>&, const std::vector<Tensor>& outputs,
                            const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                            std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* y = outputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  for (std::int64_t i = 0, n = outputs[0].numel(); i < n; ++i) dx[i] += dy[i] * y[i] * (1.0f - y[i]);
}

}  // namespace espresso
