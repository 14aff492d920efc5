// Eltwise, threaded over element chunks; each chunk folds in one input at a time so the inner
// loops stay simple enough for the compiler to vectorise.
#include "layers/eltwise.h"

#include <algorithm>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"

namespace espresso::cpu {
namespace {

class EltwiseKernel final : public Kernel {
 public:
  EltwiseKernel(const EltwiseLayer& layer, std::size_t input_count)
      : operation_(layer.operation()), coeffs_(layer.coefficients(input_count)) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    float* y = outputs[0].data<float>();
    parallel_for(
        outputs[0].numel(),
        [&](std::int64_t begin, std::int64_t end) {
          const float* first = inputs[0].data<float>();
          const float c0 = operation_ == EltwiseOperation::sum ? coeffs_[0] : 1.0f;
          for (std::int64_t i = begin; i < end; ++i) y[i] = c0 * first[i];
          for (std::size_t k = 1; k < inputs.size(); ++k)
            fold(inputs[k].data<float>(), y, begin, end, coeffs_[k]);
        },
        kElementGrain);
  }
  const char* name() const override { return "threaded"; }

 private:
  void fold(const float* x, float* y, std::int64_t begin, std::int64_t end, float coeff) const {
    switch (operation_) {
      case EltwiseOperation::sum:
        for (std::int64_t i = begin; i < end; ++i) y[i] += coeff * x[i];
        break;
      case EltwiseOperation::prod:
        for (std::int64_t i = begin; i < end; ++i) y[i] *= x[i];
        break;
      case EltwiseOperation::max:
        for (std::int64_t i = begin; i < end; ++i) y[i] = std::max(y[i], x[i]);
        break;
    }
  }

  EltwiseOperation operation_;
  std::vector<float> coeffs_;
};

}  // namespace

std::unique_ptr<Kernel> make_eltwise(const Layer& layer, const std::vector<Shape>& inputs) {
  return std::make_unique<EltwiseKernel>(static_cast<const EltwiseLayer&>(layer), inputs.size());
}

}  // namespace espresso::cpu
