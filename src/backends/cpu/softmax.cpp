// Softmax, threaded over outer x inner positions. Positions that share an outer index are taken
// in tiles of adjacent inner indices, so every pass over the classes reads contiguous memory.
#include "layers/softmax.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"

namespace espresso::cpu {
namespace {

constexpr std::int64_t kTile = 64;

// Softmax of `width` adjacent positions (width <= kTile) starting at x, classes `stride` apart.
void softmax_tile(const float* x, float* y, std::int64_t classes, std::int64_t stride, std::int64_t width) {
  std::array<float, kTile> max, sum;
  std::copy(x, x + width, max.begin());
  for (std::int64_t c = 1; c < classes; ++c) {
    for (std::int64_t i = 0; i < width; ++i) max[i] = std::max(max[i], x[c * stride + i]);
  }
  std::fill(sum.begin(), sum.begin() + width, 0.0f);
  for (std::int64_t c = 0; c < classes; ++c) {
    for (std::int64_t i = 0; i < width; ++i) {
      y[c * stride + i] = std::exp(x[c * stride + i] - max[i]);
      sum[i] += y[c * stride + i];
    }
  }
  for (std::int64_t i = 0; i < width; ++i) sum[i] = 1.0f / sum[i];
  for (std::int64_t c = 0; c < classes; ++c) {
    for (std::int64_t i = 0; i < width; ++i) y[c * stride + i] *= sum[i];
  }
}

// One contiguous row of classes (the softmax axis is the last one).
void softmax_row(const float* x, float* y, std::int64_t classes) {
  const float max = *std::max_element(x, x + classes);
  float sum = 0;
  for (std::int64_t c = 0; c < classes; ++c) {
    y[c] = std::exp(x[c] - max);
    sum += y[c];
  }
  const float inverse = 1.0f / sum;
  for (std::int64_t c = 0; c < classes; ++c) y[c] *= inverse;
}

class SoftmaxKernel final : public Kernel {
 public:
  explicit SoftmaxKernel(const AxisSplit& split) : split_(split) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    // Plain variables, not a structured binding: clang 14 (the fuzz build) cannot capture those.
    const std::int64_t outer = split_.outer, classes = split_.channels, inner = split_.inner;
    if (classes == 0) return;
    const std::int64_t tiles = (inner + kTile - 1) / kTile;
    const std::int64_t tile_elements = classes * std::min(inner, kTile);
    const std::int64_t grain =
        std::max<std::int64_t>(1, kElementGrain / std::max<std::int64_t>(1, tile_elements));
    parallel_for(
        outer * tiles,
        [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t item = begin; item < end; ++item) {
            const std::int64_t o = item / tiles, first = (item % tiles) * kTile;
            const std::int64_t at = o * classes * inner + first;
            if (inner == 1) {
              softmax_row(x + at, y + at, classes);
            } else {
              softmax_tile(x + at, y + at, classes, inner, std::min(kTile, inner - first));
            }
          }
        },
        grain);
  }
  const char* name() const override { return "threaded"; }

 private:
  AxisSplit split_;
};

}  // namespace

std::unique_ptr<Kernel> make_softmax(const Layer& layer, const std::vector<Shape>& inputs) {
  return std::make_unique<SoftmaxKernel>(static_cast<const SoftmaxLayer&>(layer).split(inputs[0]));
}

}  // namespace espresso::cpu
