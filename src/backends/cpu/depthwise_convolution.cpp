// Depthwise 2-D convolution on the CPU, computed directly: each (image, channel) plane is convolved
// with its own window, threads taking whole planes. im2col + sgemm spends most of its time unfolding
// here, since a channel's GEMM has M = 1. Each plane is first copied into a zero-bordered buffer, so
// no loop checks bounds. With AVX-512 (the GEMM's instruction set), at row stride 1 or 2, blocks of
// sixteen outputs gather every window tap in registers and are stored once, clamped (a fused ReLU or
// ReLU6); with AVX2 the same at stride 1 with blocks of eight; otherwise every tap is one multiply-add
// along the output row, which the compiler vectorises. Backward runs the layer's reference.
#include "backends/cpu/depthwise_convolution.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "backends/cpu/elementwise.h"
#include "backends/cpu/gemm.h"
#include "core/cpu_features.h"

namespace espresso::cpu {
namespace {

// Floats allocated past a padded plane, for the AVX2 and AVX-512 loops' last loads in a row.
constexpr std::int64_t kPlaneSlack = 32;

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

// The same with sixteen outputs per block (AVX-512), the fused clamp applied before the store. Loads
// run up to 15 floats past a row (kPlaneSlack).
__attribute__((target("avx512f,avx2,fma"))) void depthwise_avx512(const PlaneGeometry& p, const float* padded,
                                                                  const float* w, float bias, float* y, float lo,
                                                                  float hi) {
  const std::int64_t width = p.padded_w(), row_step = p.stride_h * width;
  const __m512 low = _mm512_set1_ps(lo), high = _mm512_set1_ps(hi);
  for (std::int64_t oy = 0; oy < p.out_h; oy += 2) {
    const bool pair = oy + 1 < p.out_h;
    const float* top = padded + oy * row_step;
    const float* bottom = pair ? top + row_step : top;
    float* out_top = y + oy * p.out_w;
    float* out_bottom = pair ? out_top + p.out_w : out_top;
    for (std::int64_t ox = 0; ox < p.out_w; ox += 16) {
      __m512 top_even = _mm512_set1_ps(bias), top_odd = _mm512_setzero_ps();
      __m512 bottom_even = top_even, bottom_odd = top_odd;
      for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
        const float* t = top + ky * p.dilation_h * width + ox;
        const float* b = bottom + ky * p.dilation_h * width + ox;
        const float* taps = w + ky * p.kernel_w;
        std::int64_t kx = 0;
        for (; kx + 2 <= p.kernel_w; kx += 2) {
          const __m512 even = _mm512_set1_ps(taps[kx]), odd = _mm512_set1_ps(taps[kx + 1]);
          const std::int64_t at = kx * p.dilation_w, next = at + p.dilation_w;
          top_even = _mm512_fmadd_ps(even, _mm512_loadu_ps(t + at), top_even);
          bottom_even = _mm512_fmadd_ps(even, _mm512_loadu_ps(b + at), bottom_even);
          top_odd = _mm512_fmadd_ps(odd, _mm512_loadu_ps(t + next), top_odd);
          bottom_odd = _mm512_fmadd_ps(odd, _mm512_loadu_ps(b + next), bottom_odd);
        }
        if (kx < p.kernel_w) {
          const __m512 even = _mm512_set1_ps(taps[kx]);
          const std::int64_t at = kx * p.dilation_w;
          top_even = _mm512_fmadd_ps(even, _mm512_loadu_ps(t + at), top_even);
          bottom_even = _mm512_fmadd_ps(even, _mm512_loadu_ps(b + at), bottom_even);
        }
      }
      // (maskz forms: GCC 12 warns that the plain ones' undefined pass-through may be uninitialised.)
      const __mmask16 all = 0xFFFF;
      const __m512 top_sum =
          _mm512_maskz_min_ps(all, _mm512_maskz_max_ps(all, _mm512_add_ps(top_even, top_odd), low), high);
      const __m512 bottom_sum =
          _mm512_maskz_min_ps(all, _mm512_maskz_max_ps(all, _mm512_add_ps(bottom_even, bottom_odd), low), high);
      const std::int64_t left = p.out_w - ox;
      const __mmask16 exists = left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
      _mm512_mask_storeu_ps(out_top + ox, exists, top_sum);
      _mm512_mask_storeu_ps(out_bottom + ox, exists, bottom_sum);
    }
  }
}

// Stride 2 along the rows (AVX-512): sixteen outputs need inputs 2·ox + kx·dilation for ox in the
// block; two loads of sixteen and one permutation pick the even ones, per tap. Loads run up to 31
// floats past a row (kPlaneSlack).
__attribute__((target("avx512f,avx2,fma"))) void depthwise_avx512_stride2(const PlaneGeometry& p,
                                                                          const float* padded, const float* w,
                                                                          float bias, float* y, float lo, float hi) {
  const std::int64_t width = p.padded_w(), row_step = p.stride_h * width;
  const __m512 low = _mm512_set1_ps(lo), high = _mm512_set1_ps(hi);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __mmask16 all = 0xFFFF;
  for (std::int64_t oy = 0; oy < p.out_h; ++oy) {
    const float* top = padded + oy * row_step;
    float* out = y + oy * p.out_w;
    for (std::int64_t ox = 0; ox < p.out_w; ox += 16) {
      __m512 sum0 = _mm512_set1_ps(bias), sum1 = _mm512_setzero_ps();
      for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
        const float* t = top + ky * p.dilation_h * width + 2 * ox;
        const float* taps = w + ky * p.kernel_w;
        for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
          const float* at = t + kx * p.dilation_w;
          const __m512 x = _mm512_permutex2var_ps(_mm512_loadu_ps(at), even, _mm512_loadu_ps(at + 16));
          if (kx % 2 == 0) {
            sum0 = _mm512_fmadd_ps(_mm512_set1_ps(taps[kx]), x, sum0);
          } else {
            sum1 = _mm512_fmadd_ps(_mm512_set1_ps(taps[kx]), x, sum1);
          }
        }
      }
      const __m512 sum = _mm512_maskz_min_ps(all, _mm512_maskz_max_ps(all, _mm512_add_ps(sum0, sum1), low), high);
      const std::int64_t left = p.out_w - ox;
      const __mmask16 exists = left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
      _mm512_mask_storeu_ps(out + ox, exists, sum);
    }
  }
}

// With the GEMM's instruction set, so that ESPRESSO_GEMM=avx2 reaches the AVX2 kernels here too.
bool use_avx512() { return std::string(fast_gemm_isa()) == "avx512"; }

class DepthwiseConvolutionKernel final : public Kernel {
 public:
  DepthwiseConvolutionKernel(const ConvolutionLayer& layer, const ConvGeometry& g)
      : layer_(layer),
        planes_(g.batch * g.in_channels),
        channels_(g.in_channels),
        plane_{g.in_size[0], g.in_size[1], g.out_size[0], g.out_size[1], g.kernel[0],   g.kernel[1],
               g.stride[0],  g.stride[1],  g.pad[0],      g.pad[1],      g.dilation[0], g.dilation[1]},
        avx2_(cpu_has_avx2_fma()),
        avx512_(avx2_ && use_avx512() && (plane_.stride_w == 1 || plane_.stride_w == 2)) {}

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
            if (avx512_) {
              // The clamp (if any) is applied in registers; ±infinity leaves values as they are.
              (plane_.stride_w == 1 ? depthwise_avx512 : depthwise_avx512_stride2)(
                  plane_, padded.data(), w + c * taps, bias ? bias[c] : 0.0f, out,
                  clamp_ ? lo_ : -std::numeric_limits<float>::infinity(),
                  clamp_ ? hi_ : std::numeric_limits<float>::infinity());
              continue;
            }
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
    if (avx512_) return clamp_ ? "direct depthwise avx512+clamp" : "direct depthwise avx512";
    if (clamp_) return avx2_ ? "direct depthwise avx2+clamp" : "direct depthwise+clamp";
    return avx2_ ? "direct depthwise avx2" : "direct depthwise";
  }

 private:
  const ConvolutionLayer& layer_;
  std::int64_t planes_, channels_;
  PlaneGeometry plane_;
  bool avx2_;
  bool avx512_;  // stride 1 or 2 on AVX-512: sixteen outputs a block, the clamp in registers
  bool clamp_ = false;
  float lo_ = 0.0f, hi_ = 0.0f;
};

}  // namespace

std::unique_ptr<Kernel> depthwise_convolution_kernel(const ConvolutionLayer& layer, const ConvGeometry& g) {
  if (g.axes() != 2 || g.group != g.in_channels || g.out_channels != g.in_channels) return nullptr;
  return std::make_unique<DepthwiseConvolutionKernel>(layer, g);
}

}  // namespace espresso::cpu
