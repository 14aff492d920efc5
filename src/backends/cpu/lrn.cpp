// LRN on the CPU: the (n, c) planes run in parallel. Each output plane first accumulates the
// squares of its window, then scales the input, so no scratch memory is needed.
#include "layers/lrn.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "core/parallel.h"

namespace espresso::cpu {
namespace {

class LRNKernel final : public Kernel {
 public:
  explicit LRNKernel(const LRNLayer& layer) : layer_(layer) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const Shape& shape = inputs[0].shape();
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const std::int64_t channels = shape[1];
    const std::int64_t spatial = shape.count(2);
    const std::int64_t grain = std::max<std::int64_t>(1, 4096 / std::max<std::int64_t>(1, spatial));
    parallel_for(
        shape[0] * channels,
        [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t p = begin; p < end; ++p) {
            if (layer_.across_channels()) {
              across(x, y + p * spatial, p / channels, p % channels, channels, spatial);
            } else {
              within(x + p * spatial, y + p * spatial, shape[2], shape[3]);
            }
          }
        },
        grain);
  }

  const char* name() const override { return layer_.across_channels() ? "across" : "within"; }

 private:
  void across(const float* x, float* out, std::int64_t n, std::int64_t c, std::int64_t channels,
              std::int64_t spatial) const {
    const std::int64_t first = std::max<std::int64_t>(c - layer_.before(), 0);
    const std::int64_t last = std::min(c - layer_.before() + layer_.size(), channels);
    std::fill(out, out + spatial, 0.0f);
    for (std::int64_t j = first; j < last; ++j) {
      const float* in = x + (n * channels + j) * spatial;
      for (std::int64_t i = 0; i < spatial; ++i) out[i] += in[i] * in[i];
    }
    const float* in = x + (n * channels + c) * spatial;
    const float scale = layer_.alpha() / static_cast<float>(layer_.size());
    const float k = layer_.k();
    const float exponent = -layer_.beta();
    for (std::int64_t i = 0; i < spatial; ++i) out[i] = in[i] * std::pow(k + scale * out[i], exponent);
  }

  void within(const float* in, float* out, std::int64_t height, std::int64_t width) const {
    const std::int64_t before = layer_.before();
    const std::int64_t size = layer_.size();
    const float scale = layer_.alpha() / static_cast<float>(size * size);
    const float exponent = -layer_.beta();
    for (std::int64_t h = 0; h < height; ++h) {
      const std::int64_t top = std::max<std::int64_t>(h - before, 0);
      const std::int64_t bottom = std::min(h - before + size, height);
      for (std::int64_t w = 0; w < width; ++w) {
        const std::int64_t left = std::max<std::int64_t>(w - before, 0);
        const std::int64_t right = std::min(w - before + size, width);
        float sum = 0.0f;
        for (std::int64_t i = top; i < bottom; ++i) {
          for (std::int64_t j = left; j < right; ++j) sum += in[i * width + j] * in[i * width + j];
        }
        out[h * width + w] = in[h * width + w] * std::pow(1.0f + scale * sum, exponent);
      }
    }
  }

  const LRNLayer& layer_;
};

}  // namespace

std::unique_ptr<Kernel> make_lrn(const Layer& layer, const std::vector<Shape>&) {
  return std::make_unique<LRNKernel>(static_cast<const LRNLayer&>(layer));
}

}  // namespace espresso::cpu
