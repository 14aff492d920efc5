// Activation on the CPU, threaded over element chunks. clip (ReLU6), hard_sigmoid and hard_swish, the
// ones mobile networks run on their largest tensors, have AVX2 loops that give the reference's results
// bit for bit (std::max(a, b) is _mm256_max_ps(b, a): both give a when either is NaN); every
// other function, and every tail, calls the layer's own per-element function. sigmoid, tanh, abs and power
// (Caffe's former layers of their own) get loops with their formula inlined, free of the per-element call
// and switch.
#include "layers/activation.h"

#include <immintrin.h>

#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"
#include "core/cpu_features.h"

namespace espresso::cpu {
namespace {

using Function = ActivationLayer::Function;

bool has_avx2_loop(Function f) {
  return f == Function::clip || f == Function::hard_sigmoid || f == Function::hard_swish;
}

// The elements [0, n) the AVX2 loop covered; the caller finishes the tail. Without "fma" in the
// target, the compiler cannot fuse a multiply and an add into one differently rounded instruction.
__attribute__((target("avx2"))) std::int64_t activation_avx2(const ActivationLayer& layer, const float* x,
                                                             float* y, std::int64_t n) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  std::int64_t i = 0;
  switch (layer.function()) {
    case Function::clip: {
      const __m256 lo = _mm256_set1_ps(static_cast<float>(layer.min()));
      const __m256 hi = _mm256_set1_ps(static_cast<float>(layer.max()));
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_loadu_ps(x + i))));
      break;
    }
    case Function::hard_sigmoid: {
      const __m256 alpha = _mm256_set1_ps(static_cast<float>(layer.alpha()));
      const __m256 beta = _mm256_set1_ps(static_cast<float>(layer.beta()));
      for (; i + 8 <= n; i += 8) {
        const __m256 t = _mm256_add_ps(_mm256_mul_ps(alpha, _mm256_loadu_ps(x + i)), beta);
        _mm256_storeu_ps(y + i, _mm256_max_ps(_mm256_min_ps(t, one), zero));
      }
      break;
    }
    case Function::hard_swish: {
      const __m256 six = _mm256_set1_ps(6.0f), half = _mm256_set1_ps(0.5f);
      for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 gate =
            _mm256_max_ps(_mm256_min_ps(_mm256_add_ps(_mm256_div_ps(v, six), half), one), zero);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v, gate));
      }
      break;
    }
    default:
      break;
  }
  return i;
}

class ActivationKernel final : public Kernel {
 public:
  explicit ActivationKernel(const ActivationLayer& layer)
      : layer_(layer), avx2_(cpu_has_avx2_fma() && has_avx2_loop(layer.function())) {}

  // x and y may alias: each element is read before it is written.
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const std::int64_t n = inputs[0].numel();
    const auto alpha = static_cast<float>(layer_.alpha()), beta = static_cast<float>(layer_.beta()),
               gamma = static_cast<float>(layer_.gamma());
    switch (layer_.function()) {
      case Function::sigmoid:
        return map_elements(x, y, n, [](float v) { return sigmoid_value(v); });
      case Function::tanh:
        return map_elements(x, y, n, [](float v) { return std::tanh(v); });
      case Function::abs:
        return map_elements(x, y, n, [](float v) { return std::abs(v); });
      case Function::power:
        return map_elements(x, y, n, [=](float v) { return power_value(v, alpha, beta, gamma); });
      default:
        break;
    }
    parallel_for(
        n,
        [&](std::int64_t begin, std::int64_t end) {
          std::int64_t i = begin;
          if (avx2_) i += activation_avx2(layer_, x + begin, y + begin, end - begin);
          for (; i < end; ++i) y[i] = layer_.apply(x[i]);
        },
        kElementGrain);
  }
  const char* name() const override { return avx2_ ? "avx2" : "threaded"; }

 private:
  const ActivationLayer& layer_;
  bool avx2_;
};

}  // namespace

std::unique_ptr<Kernel> make_activation(const Layer& layer, const std::vector<Shape>&) {
  return std::make_unique<ActivationKernel>(static_cast<const ActivationLayer&>(layer));
}

}  // namespace espresso::cpu
