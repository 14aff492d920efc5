// Depthwise 2-D convolution on the CPU, computed directly: each (image, channel) plane is convolved
// with its own window, threads taking whole planes. Each output row gathers every window tap as one
// multiply-add along the row, over exactly the columns whose input lies inside the image, so the inner
// loop has no bounds checks and vectorises (contiguously at stride 1). im2col + sgemm spends most of
// its time unfolding here: a channel's GEMM has M = 1. Backward runs the layer's reference.
#include "backends/cpu/depthwise_convolution.h"

#include <algorithm>

#include "backends/cpu/elementwise.h"
#include "core/cpu_features.h"

namespace espresso::cpu {
namespace {

struct PlaneGeometry {
  std::int64_t in_h, in_w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
      dilation_w;
};

// One channel: y (out_h x out_w) = bias + x (in_h x in_w) convolved with w (kernel_h x kernel_w).
[[gnu::always_inline]] inline void depthwise_plane(const PlaneGeometry& p, const float* x, const float* w,
                                                   float bias, float* y) {
  for (std::int64_t oy = 0; oy < p.out_h; ++oy) {
    float* row = y + oy * p.out_w;
    std::fill(row, row + p.out_w, bias);
    for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
      const std::int64_t iy = oy * p.stride_h - p.pad_h + ky * p.dilation_h;
      if (iy < 0 || iy >= p.in_h) continue;
      const float* in_row = x + iy * p.in_w;
      for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
        // Output column ox reads input column ox·stride + offset; keep those inside [0, in_w).
        const std::int64_t offset = kx * p.dilation_w - p.pad_w;
        const std::int64_t first = offset >= 0 ? 0 : (-offset + p.stride_w - 1) / p.stride_w;
        const std::int64_t last =
            offset > p.in_w - 1 ? 0 : std::min(p.out_w, (p.in_w - 1 - offset) / p.stride_w + 1);
        if (first >= last) continue;
        const float tap = w[ky * p.kernel_w + kx];
        const float* in = in_row + first * p.stride_w + offset;
        float* out = row + first;
        const std::int64_t count = last - first;
        if (p.stride_w == 1) {
          for (std::int64_t j = 0; j < count; ++j) out[j] += tap * in[j];
        } else {
          for (std::int64_t j = 0; j < count; ++j) out[j] += tap * in[j * p.stride_w];
        }
      }
    }
  }
}

void depthwise_plane_baseline(const PlaneGeometry& p, const float* x, const float* w, float bias, float* y) {
  depthwise_plane(p, x, w, bias, y);
}

__attribute__((target("avx2,fma"))) void depthwise_plane_avx2(const PlaneGeometry& p, const float* x,
                                                              const float* w, float bias, float* y) {
  depthwise_plane(p, x, w, bias, y);
}

class DepthwiseConvolutionKernel final : public Kernel {
 public:
  DepthwiseConvolutionKernel(const ConvolutionLayer& layer, const ConvGeometry& g)
      : layer_(layer),
        planes_(g.batch * g.in_channels),
        channels_(g.in_channels),
        plane_{g.in_size[0], g.in_size[1], g.out_size[0], g.out_size[1], g.kernel[0],   g.kernel[1],
               g.stride[0],  g.stride[1],  g.pad[0],      g.pad[1],      g.dilation[0], g.dilation[1]},
        run_(cpu_has_avx2_fma() ? depthwise_plane_avx2 : depthwise_plane_baseline) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const float* w = layer_.weights()[0].data<float>();
    const float* bias = layer_.has_bias() ? layer_.weights()[1].data<float>() : nullptr;
    const std::int64_t in_plane = plane_.in_h * plane_.in_w, out_plane = plane_.out_h * plane_.out_w;
    const std::int64_t taps = plane_.kernel_h * plane_.kernel_w;
    const std::int64_t work = std::max<std::int64_t>(1, out_plane * taps);
    parallel_for(
        planes_,
        [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t i = begin; i < end; ++i) {
            const std::int64_t c = i % channels_;
            run_(plane_, x + i * in_plane, w + c * taps, bias ? bias[c] : 0.0f, y + i * out_plane);
          }
        },
        std::max<std::int64_t>(1, kElementGrain / work));
  }
  const char* name() const override { return "direct depthwise"; }

 private:
  const ConvolutionLayer& layer_;
  std::int64_t planes_, channels_;
  PlaneGeometry plane_;
  void (*run_)(const PlaneGeometry&, const float*, const float*, float, float*);
};

}  // namespace

std::unique_ptr<Kernel> make_depthwise_convolution(const ConvolutionLayer& layer, const ConvGeometry& g) {
  if (g.axes() != 2 || g.group != g.in_channels || g.out_channels != g.in_channels) return nullptr;
  return std::make_unique<DepthwiseConvolutionKernel>(layer, g);
}

}  // namespace espresso::cpu
