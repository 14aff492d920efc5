// Pooling on the CPU for 1 and 2 spatial axes: windows are clipped once at creation, and the
// (n, c) planes run in parallel, forward and backward. Inputs with more axes use the reference kernel.
#include "layers/pooling.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/parallel.h"

namespace espresso::cpu {
namespace {

class PoolingKernel final : public Kernel {
 public:
  PoolingKernel(const PoolingLayer& layer, const PoolGeometry& g)
      : max_(layer.method() == PoolMethod::max), planes_(g.batch * g.channels) {
    // 1D pooling is 2D pooling over a height of 1.
    const int first = g.axes() == 2 ? 0 : -1;
    rows_ = axis_windows(g, first, layer.count_include_pad());
    cols_ = axis_windows(g, g.axes() - 1, layer.count_include_pad());
    in_height_ = first < 0 ? 1 : g.in_size[0];
    in_width_ = g.in_size.back();
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const auto out_height = static_cast<std::int64_t>(rows_.size());
    const auto out_width = static_cast<std::int64_t>(cols_.size());
    const std::int64_t in_plane = in_height_ * in_width_;
    const std::int64_t out_plane = out_height * out_width;
    parallel_for(
        planes_,
        [&](std::int64_t begin, std::int64_t end) {
          // Separable: each output row first reduces its window's input rows into one line (a loop
          // along the row the compiler vectorises), then each output reduces its columns of it.
          std::vector<float> line(static_cast<std::size_t>(in_width_));
          const float init = max_ ? -std::numeric_limits<float>::infinity() : 0.0f;
          for (std::int64_t p = begin; p < end; ++p) {
            const float* in = x + p * in_plane;
            float* out = y + p * out_plane;
            for (const Window& r : rows_) {
              std::fill(line.begin(), line.end(), init);
              float* acc = line.data();
              for (std::int64_t h = r.begin; h < r.end; ++h) {
                const float* row = in + h * in_width_;
                if (max_) {
                  for (std::int64_t w = 0; w < in_width_; ++w) acc[w] = std::max(acc[w], row[w]);
                } else {
                  for (std::int64_t w = 0; w < in_width_; ++w) acc[w] += row[w];
                }
              }
              for (const Window& c : cols_) {
                float value = init;
                if (max_) {
                  for (std::int64_t w = c.begin; w < c.end; ++w) value = std::max(value, acc[w]);
                } else {
                  for (std::int64_t w = c.begin; w < c.end; ++w) value += acc[w];
                  value /= static_cast<float>(r.divisor * c.divisor);
                }
                *out++ = value;
              }
            }
          }
        },
        std::max<std::int64_t>(1, 4096 / std::max<std::int64_t>(1, out_plane)));
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    if (!input_grads[0].defined()) return;
    const float* x = inputs[0].data<float>();
    const float* dy = output_grads[0].data<float>();
    float* dx = input_grads[0].data<float>();
    const std::int64_t in_plane = in_height_ * in_width_;
    const std::int64_t out_plane = static_cast<std::int64_t>(rows_.size() * cols_.size());
    parallel_for(
        planes_,
        [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t p = begin; p < end; ++p) {
            const float* in = x + p * in_plane;
            const float* grad = dy + p * out_plane;
            float* grad_in = dx + p * in_plane;
            for (const Window& r : rows_) {
              for (const Window& c : cols_) {
                const float g = *grad++;
                if (r.begin >= r.end || c.begin >= c.end) continue;
                if (max_) {
                  // The first maximum in row-major order, as the forward's running max keeps it.
                  std::int64_t best = r.begin * in_width_ + c.begin;
                  for (std::int64_t h = r.begin; h < r.end; ++h) {
                    for (std::int64_t w = c.begin; w < c.end; ++w) {
                      if (in[h * in_width_ + w] > in[best]) best = h * in_width_ + w;
                    }
                  }
                  grad_in[best] += g;
                } else {
                  const float share = g / static_cast<float>(r.divisor * c.divisor);
                  for (std::int64_t h = r.begin; h < r.end; ++h) {
                    for (std::int64_t w = c.begin; w < c.end; ++w) grad_in[h * in_width_ + w] += share;
                  }
                }
              }
            }
          }
        },
        std::max<std::int64_t>(1, 4096 / std::max<std::int64_t>(1, out_plane)));
  }
  bool has_fast_backward() const override { return true; }

  const char* name() const override { return max_ ? "max" : "ave"; }

 private:
  struct Window {
    std::int64_t begin, end, divisor;
  };

  // Axis -1 is a unit axis for 1D inputs.
  static std::vector<Window> axis_windows(const PoolGeometry& g, int axis, bool count_include_pad) {
    if (axis < 0) return {{0, 1, 1}};
    std::vector<Window> windows;
    for (std::int64_t o = 0; o < g.out_size[static_cast<std::size_t>(axis)]; ++o) {
      const PoolGeometry::Span s = g.span(axis, o, count_include_pad);
      windows.push_back({s.begin, s.end, s.divisor});
    }
    return windows;
  }

  bool max_;
  std::int64_t planes_;
  std::int64_t in_height_ = 1, in_width_ = 1;
  std::vector<Window> rows_, cols_;
};

}  // namespace

std::unique_ptr<Kernel> make_pooling(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& pooling = static_cast<const PoolingLayer&>(layer);
  const PoolGeometry g = pooling.geometry(inputs[0]);
  if (g.axes() > 2) return nullptr;
  return std::make_unique<PoolingKernel>(pooling, g);
}

}  // namespace espresso::cpu
