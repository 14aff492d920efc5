// Depthwise 2-D convolution on the CPU, computed directly: each (image, channel) plane is convolved
// with its own window, threads taking whole planes. im2col + sgemm spends most of its time unfolding
// here, since a channel's GEMM has M = 1. Each plane is first copied into a zero-bordered buffer, so
// no loop checks bounds. At stride 1 with AVX2, blocks of eight outputs gather every window tap in
// registers and are stored once; otherwise every tap is one multiply-add along the output row, which
// the compiler vectorises. Backward runs the layer's reference.
#include "backends/cpu/depthwise_convolution.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "backends/cpu/elementwise.h"
#include "core/cpu_features.h"

namespace espresso::cpu {
namespace {

// Floats allocated past a padded plane, for the AVX2 loop's last loads in a row.
constexpr std::int64_t kPlaneSlack = 8;

struct PlaneGeometry {
  std::int64_t in_h, in_w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
      dilation_w;
  std::int64_t padded_h() const { return in_h + 2 * pad_h; }
  std::int64_t padded_w() const { return in_w + 2 * pad_w; }
};

// `padded` (padded_h x padded_w): x (in_h x in_w) inside a border of zeros.
void pad_plane(const PlaneGeometry& p, const float* x, float* padded) {
  const std::int64_t width = p.padded_w();
  std::fill(padded, padded + p.pad_h * width, 0.0f);
  for (std::int64_t iy = 0; iy < p.in_h; ++iy) {
    float* row = padded + (p.pad_h + iy) * width;
    std::fill(row, row + p.pad_w, 0.0f);
    std::memcpy(row + p.pad_w, x + iy * p.in_w, static_cast<std::size_t>(p.in_w) * sizeof(float));
    std::fill(row + p.pad_w + p.in_w, row + width, 0.0f);
  }
  std::fill(padded + (p.pad_h + p.in_h) * width, padded + p.padded_h() * width, 0.0f);
}

// y (out_h x out_w) = bias + padded convolved with w (kernel_h x kernel_w), one tap at a time along each
// output row.
[[gnu::always_inline]] inline void depthwise_by_taps(const PlaneGeometry& p, const float* padded,
                                                     const float* w, float bias, float* y) {
  const std::int64_t width = p.padded_w();
  for (std::int64_t oy = 0; oy < p.out_h; ++oy) {
    float* row = y + oy * p.out_w;
    std::fill(row, row + p.out_w, bias);
    for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
      const float* in_row = padded + (oy * p.stride_h + ky * p.dilation_h) * width;
      for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
        const float tap = w[ky * p.kernel_w + kx];
        const float* in = in_row + kx * p.dilation_w;
        if (p.stride_w == 1) {
          for (std::int64_t ox = 0; ox < p.out_w; ++ox) row[ox] += tap * in[ox];
        } else {
          for (std::int64_t ox = 0; ox < p.out_w; ++ox) row[ox] += tap * in[ox * p.stride_w];
        }
      }
    }
  }
}

void depthwise_baseline(const PlaneGeometry& p, const float* padded, const float* w, float bias, float* y) {
  depthwise_by_taps(p, padded, w, bias, y);
}

// Stride 1: eight outputs of two rows at a time, each summing its window in registers, even and odd
// window columns apart, so that four independent chains of multiply-adds keep the FMA units busy. A
// row's last block stores only the outputs that exist; its loads may run up to 7 floats past the
// plane (kPlaneSlack).
__attribute__((target("avx2,fma"))) void depthwise_avx2(const PlaneGeometry& p, const float* padded,
                                                        const float* w, float bias, float* y) {
  if (p.stride_w != 1) {
    depthwise_by_taps(p, padded, w, bias, y);
    return;
  }
  const std::int64_t width = p.padded_w(), row_step = p.stride_h * width;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (std::int64_t oy = 0; oy < p.out_h; oy += 2) {
    // A last row without a partner is computed twice, into the same place.
    const bool pair = oy + 1 < p.out_h;
    const float* top = padded + oy * row_step;
    const float* bottom = pair ? top + row_step : top;
    float* out_top = y + oy * p.out_w;
    float* out_bottom = pair ? out_top + p.out_w : out_top;
    for (std::int64_t ox = 0; ox < p.out_w; ox += 8) {
      __m256 top_even = _mm256_set1_ps(bias), top_odd = _mm256_setzero_ps();
      __m256 bottom_even = top_even, bottom_odd = top_odd;
      for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
        const float* t = top + ky * p.dilation_h * width + ox;
        const float* b = bottom + ky * p.dilation_h * width + ox;
        const float* taps = w + ky * p.kernel_w;
        std::int64_t kx = 0;
        for (; kx + 2 <= p.kernel_w; kx += 2) {
          const __m256 even = _mm256_broadcast_ss(taps + kx), odd = _mm256_broadcast_ss(taps + kx + 1);
          const std::int64_t at = kx * p.dilation_w, next = at + p.dilation_w;
          top_even = _mm256_fmadd_ps(even, _mm256_loadu_ps(t + at), top_even);
          bottom_even = _mm256_fmadd_ps(even, _mm256_loadu_ps(b + at), bottom_even);
          top_odd = _mm256_fmadd_ps(odd, _mm256_loadu_ps(t + next), top_odd);
          bottom_odd = _mm256_fmadd_ps(odd, _mm256_loadu_ps(b + next), bottom_odd);
        }
        if (kx < p.kernel_w) {
          const __m256 even = _mm256_broadcast_ss(taps + kx);
          const std::int64_t at = kx * p.dilation_w;
          top_even = _mm256_fmadd_ps(even, _mm256_loadu_ps(t + at), top_even);
          bottom_even = _mm256_fmadd_ps(even, _mm256_loadu_ps(b + at), bottom_even);
        }
      }
      const __m256 top_sum = _mm256_add_ps(top_even, top_odd),
                   bottom_sum = _mm256_add_ps(bottom_even, bottom_odd);
      if (ox + 8 <= p.out_w) {
        _mm256_storeu_ps(out_top + ox, top_sum);
        _mm256_storeu_ps(out_bottom + ox, bottom_sum);
      } else {
        const __m256i exists = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(p.out_w - ox)), lanes);
        _mm256_maskstore_ps(out_top + ox, exists, top_sum);
        _mm256_maskstore_ps(out_bottom + ox, exists, bottom_sum);
      }
    }
  }
}

class DepthwiseConvolutionKernel final : public Kernel {
 public:
  DepthwiseConvolutionKernel(const ConvolutionLayer& layer, const ConvGeometry& g)
      : layer_(layer),
        planes_(g.batch * g.in_channels),
        channels_(g.in_channels),
        plane_{g.in_size[0], g.in_size[1], g.out_size[0], g.out_size[1], g.kernel[0],   g.kernel[1],
               g.stride[0],  g.stride[1],  g.pad[0],      g.pad[1],      g.dilation[0], g.dilation[1]},
        avx2_(cpu_has_avx2_fma()) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const float* w = layer_.weights()[0].data<float>();
    const float* bias = layer_.has_bias() ? layer_.weights()[1].data<float>() : nullptr;
    const std::int64_t in_plane = plane_.in_h * plane_.in_w, out_plane = plane_.out_h * plane_.out_w;
    const std::int64_t taps = plane_.kernel_h * plane_.kernel_w;
    const std::int64_t work = std::max<std::int64_t>(1, out_plane * taps);
    const auto run = avx2_ ? depthwise_avx2 : depthwise_baseline;
    parallel_for(
        planes_,
        [&](std::int64_t begin, std::int64_t end) {
          std::vector<float> padded(
              static_cast<std::size_t>(plane_.padded_h() * plane_.padded_w() + kPlaneSlack));
          for (std::int64_t i = begin; i < end; ++i) {
            const std::int64_t c = i % channels_;
            pad_plane(plane_, x + i * in_plane, padded.data());
            float* out = y + i * out_plane;
            run(plane_, padded.data(), w + c * taps, bias ? bias[c] : 0.0f, out);
            if (clamp_) {
              // The fused ReLU/clip, while the plane is still in cache.
              for (std::int64_t k = 0; k < out_plane; ++k) out[k] = std::min(std::max(out[k], lo_), hi_);
            }
          }
        },
        std::max<std::int64_t>(1, kElementGrain / work));
  }
  bool fuse_clamp(float lo, float hi) override {
    if (clamp_) return false;
    clamp_ = true;
    lo_ = lo;
    hi_ = hi;
    return true;
  }
  const char* name() const override {
    if (clamp_) return avx2_ ? "direct depthwise avx2+clamp" : "direct depthwise+clamp";
    return avx2_ ? "direct depthwise avx2" : "direct depthwise";
  }

 private:
  const ConvolutionLayer& layer_;
  std::int64_t planes_, channels_;
  PlaneGeometry plane_;
  bool avx2_;
  bool clamp_ = false;
  float lo_ = 0.0f, hi_ = 0.0f;
};

}  // namespace

std::unique_ptr<Kernel> depthwise_convolution_kernel(const ConvolutionLayer& layer, const ConvGeometry& g) {
  if (g.axes() != 2 || g.group != g.in_channels || g.out_channels != g.in_channels) return nullptr;
  return std::make_unique<DepthwiseConvolutionKernel>(layer, g);
}

}  // namespace espresso::cpu
