#include "backends/cpu/elementwise.h"

#include <immintrin.h>

#include "core/cpu_features.h"

namespace espresso::cpu {
namespace {

// One multiplier and offset for the whole row.
void affine_row_scalar(const float* x, float* y, std::int64_t n, float a, float b) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = x[i] * a + b;
}

// A multiplier and offset per element (the channel axis is the last one).
void affine_each_scalar(const float* x, float* y, std::int64_t n, const float* a, const float* b) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = x[i] * a[i] + b[i];
}

__attribute__((target("avx2,fma"))) void affine_row_avx2(const float* x, float* y, std::int64_t n, float a,
                                                         float b) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), va, vb));
  affine_row_scalar(x + i, y + i, n - i, a, b);
}

__attribute__((target("avx2,fma"))) void affine_each_avx2(const float* x, float* y, std::int64_t n,
                                                          const float* a, const float* b) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i,
                     _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  }
  affine_each_scalar(x + i, y + i, n - i, a + i, b + i);
}

}  // namespace

void channel_affine(const float* x, float* y, const AxisSplit& split, const float* multiplier,
                    const float* offset) {
  const bool avx2 = cpu_has_avx2_fma();
  if (split.inner == 1) {
    const auto run = avx2 ? affine_each_avx2 : affine_each_scalar;
    const std::int64_t grain =
        std::max<std::int64_t>(1, kElementGrain / std::max<std::int64_t>(1, split.channels));
    parallel_for(
        split.outer,
        [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t o = begin; o < end; ++o) {
            run(x + o * split.channels, y + o * split.channels, split.channels, multiplier, offset);
          }
        },
        grain);
    return;
  }
  const auto run = avx2 ? affine_row_avx2 : affine_row_scalar;
  for_each_channel_row(split, [&](std::int64_t at, std::int64_t length, std::int64_t c) {
    run(x + at, y + at, length, multiplier[c], offset[c]);
  });
}

const char* channel_affine_name() { return cpu_has_avx2_fma() ? "avx2" : "scalar"; }

}  // namespace espresso::cpu
