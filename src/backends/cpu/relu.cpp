// ReLU on the CPU: threads over the elements, AVX2 where the processor has it.
#include "layers/relu.h"

#include <immintrin.h>

#include "backends/cpu/cpu_backend.h"
#include "core/cpu_features.h"
#include "core/parallel.h"

namespace espresso::cpu {
namespace {

void relu_scalar(const float* x, float* y, std::int64_t n, float slope) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = x[i] > 0 ? x[i] : slope * x[i];
}

__attribute__((target("avx2,fma"))) void relu_avx2(const float* x, float* y, std::int64_t n, float slope) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 s = _mm256_set1_ps(slope);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 positive = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
    _mm256_storeu_ps(y + i, _mm256_blendv_ps(_mm256_mul_ps(v, s), v, positive));
  }
  relu_scalar(x + i, y + i, n - i, slope);
}

class ReLUKernel final : public Kernel {
 public:
  explicit ReLUKernel(float slope) : slope_(slope) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const auto run = cpu_has_avx2_fma() ? relu_avx2 : relu_scalar;
    parallel_for(
        inputs[0].numel(), [&](std::int64_t b, std::int64_t e) { run(x + b, y + b, e - b, slope_); },
        1 << 14);
  }
  const char* name() const override { return cpu_has_avx2_fma() ? "avx2" : "scalar"; }

 private:
  float slope_;
};

}  // namespace

std::unique_ptr<Kernel> make_relu(const Layer& layer, const std::vector<Shape>&) {
  return std::make_unique<ReLUKernel>(static_cast<const ReLULayer&>(layer).negative_slope());
}

}  // namespace espresso::cpu
