#include "layers/absval.h"

#include <cmath>

namespace espresso {

void AbsValLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) y[i] = std::abs(x[i]);
}

}  // namespace espresso
