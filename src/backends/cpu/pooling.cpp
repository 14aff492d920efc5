// Pooling on the CPU for 1 and 2 spatial axes: windows are clipped once at creation, and the
// (n, c) planes run in parallel, forward and backward. Inputs with more axes use the reference kernel.
#include "layers/pooling.h"

#include <immintrin.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/max_pool_rows.h"
#include "core/cpu_features.h"
#include "core/parallel.h"

namespace espresso::cpu {
namespace {

// Max over every output's column window of `line`, whose entry j·Stride + t (t < kernel) is window
// j's t-th column: the caller puts -infinity where windows pass the image's borders, so no window is
// clipped here and the loops vectorise (Stride 1 or 2 fixed at compile time; 0: `stride`).
template <int Stride>
void max_columns_generic(const float* line, std::int64_t kernel, std::int64_t stride, std::int64_t outputs,
                         float* out) {
  const std::int64_t s = Stride > 0 ? Stride : stride;
  for (std::int64_t j = 0; j < outputs; ++j) out[j] = line[j * s];
  for (std::int64_t t = 1; t < kernel; ++t) {
    const float* from = line + t;
    for (std::int64_t j = 0; j < outputs; ++j) out[j] = std::max(out[j], from[j * s]);
  }
}

template <int Stride>
__attribute__((target("avx2"))) void max_columns_avx2(const float* line, std::int64_t kernel,
                                                      std::int64_t stride, std::int64_t outputs, float* out) {
  max_columns_generic<Stride>(line, kernel, stride, outputs, out);
}

// The window rows' elementwise max into `acc`.
void max_rows_generic(const float* top, std::int64_t count, std::int64_t width, float* acc) {
  std::copy(top, top + width, acc);
  for (std::int64_t h = 1; h < count; ++h) {
    const float* row = top + h * width;
    for (std::int64_t w = 0; w < width; ++w) acc[w] = std::max(acc[w], row[w]);
  }
}

__attribute__((target("avx2"))) void max_rows_avx2(const float* top, std::int64_t count, std::int64_t width,
                                                   float* acc) {
  max_rows_generic(top, count, width, acc);
}

// AVX-512: sixteen columns a step, the last step masked (the compiler's loops spent their time in
// scalar remainders at SqueezeNet's widths of 111 and 55). Each max is taken as max(next, kept), which keeps
// the earlier value on ties and NaNs as std::max(kept, next) does in the other paths (maskz_max with every
// lane: GCC 12 warns of an uninitialised operand in the plain _mm512_max_ps).
__mmask16 first_lanes(std::int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << std::max<std::int64_t>(n, 0)) - 1u);
}

__attribute__((target("avx512f"))) void max_rows_avx512(const float* top, std::int64_t count,
                                                        std::int64_t width, float* acc) {
  for (std::int64_t w = 0; w < width; w += 16) {
    const __mmask16 m = first_lanes(width - w);
    __m512 v = _mm512_maskz_loadu_ps(m, top + w);
    for (std::int64_t h = 1; h < count; ++h)
      v = _mm512_maskz_max_ps(0xFFFF, _mm512_maskz_loadu_ps(m, top + h * width + w), v);
    _mm512_mask_storeu_ps(acc + w, m, v);
  }
}

// Window column t of the n ≤ 16 outputs from j. Stride 2: every other one of the 32 entries from
// 2j + t − t mod 2, picked by one permute (the even or the odd ones); loads masked to the entries used.
template <int Stride>
[[gnu::always_inline]] inline __attribute__((target("avx512f"))) __m512 window_column(const float* line,
                                                                                      std::int64_t j,
                                                                                      std::int64_t n,
                                                                                      std::int64_t t) {
  if constexpr (Stride == 1) {
    return _mm512_maskz_loadu_ps(first_lanes(n), line + j + t);
  } else {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const std::int64_t used = 2 * n - 1 + (t & 1);  // entries 0 .. 2(n − 1) + t mod 2
    const float* from = line + 2 * j + (t & ~std::int64_t{1});
    const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(used), from);
    const __m512 hi = _mm512_maskz_loadu_ps(first_lanes(used - 16), from + 16);
    return _mm512_permutex2var_ps(lo, (t & 1) ? odd : even, hi);
  }
}

template <int Stride>
__attribute__((target("avx512f"))) void max_columns_avx512(const float* line, std::int64_t kernel,
                                                           std::int64_t, std::int64_t outputs, float* out) {
  for (std::int64_t j = 0; j < outputs; j += 16) {
    const std::int64_t n = std::min<std::int64_t>(16, outputs - j);
    __m512 v = window_column<Stride>(line, j, n, 0);
    for (std::int64_t t = 1; t < kernel; ++t)
      v = _mm512_maskz_max_ps(0xFFFF, window_column<Stride>(line, j, n, t), v);
    _mm512_mask_storeu_ps(out + j, first_lanes(n), v);
  }
}

MaxPoolRows::Kernels max_pool_kernels(std::int64_t stride) {
  const bool avx512 = fast_gemm_uses_avx512(), avx2 = cpu_has_avx2_fma();
  MaxPoolRows::Kernels k;
  k.rows = avx512 ? max_rows_avx512 : avx2 ? max_rows_avx2 : max_rows_generic;
  if (avx512 && (stride == 1 || stride == 2)) {
    k.columns = stride == 1 ? max_columns_avx512<1> : max_columns_avx512<2>;
  } else if (avx2) {
    k.columns = stride == 1 ? max_columns_avx2<1> : stride == 2 ? max_columns_avx2<2> : max_columns_avx2<0>;
  } else {
    k.columns = stride == 1   ? max_columns_generic<1>
                : stride == 2 ? max_columns_generic<2>
                              : max_columns_generic<0>;
  }
  return k;
}

}  // namespace

MaxPoolRows::MaxPoolRows(const PoolGeometry& g) {
  const int axes = g.axes();
  if (axes == 2) {
    for (std::int64_t o = 0; o < g.out_size[0]; ++o) {
      const PoolGeometry::Span s = g.span(0, o, false);
      rows_.push_back({s.begin, s.end});
    }
  } else {
    rows_.push_back({0, 1});
  }
  in_width_ = g.in_size.back();
  out_width_ = g.out_size.back();
  // Max windows are [o·stride − pad, + kernel) clipped to the image (PoolGeometry::span): the line
  // gets pad_w of -infinity on the left and enough on the right for the last window.
  kernel_w_ = g.kernel.back();
  stride_w_ = g.stride.back();
  pad_w_ = g.pad.back();
  line_size_ = std::max(pad_w_ + in_width_, (out_width_ - 1) * stride_w_ + kernel_w_);
  kernels_ = max_pool_kernels(stride_w_);
}

void MaxPoolRows::run(const float* rows, std::int64_t first, std::int64_t begin, std::int64_t end, float* out,
                      float* line) const {
  constexpr float lowest = -std::numeric_limits<float>::infinity();
  std::fill(line, line + line_size_, lowest);
  float* acc = line + pad_w_;
  for (std::int64_t o = begin; o < end; ++o, out += out_width_) {
    const Window& r = rows_[static_cast<std::size_t>(o)];
    if (r.begin >= r.end) {
      std::fill(acc, acc + in_width_, lowest);
    } else {
      kernels_.rows(rows + (r.begin - first) * in_width_, r.end - r.begin, in_width_, acc);
    }
    kernels_.columns(line, kernel_w_, stride_w_, out_width_, out);
  }
}

namespace {

// Sixteen running sums, which the compiler keeps in vector registers, then their total.
float plane_sum(const float* x, std::int64_t n) {
  constexpr int kLanes = 16;
  float lanes[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += x[i + j];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += x[i];
  for (const float lane : lanes) sum += lane;
  return sum;
}

class PoolingKernel final : public Kernel {
 public:
  PoolingKernel(const PoolingLayer& layer, const PoolGeometry& g)
      : max_(layer.method() == PoolMethod::max), planes_(g.batch * g.channels), max_rows_(g) {
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
    if (max_) {
      max_forward(x, y);
      return;
    }
    if (out_plane == 1 && rows_[0].end - rows_[0].begin == in_height_ &&
        cols_[0].end - cols_[0].begin == in_width_) {
      // One window over the whole plane (global average pooling): each plane summed straight through, the
      // planes shared out by their size (the general path's grain, by outputs, kept them on one thread).
      const auto divisor = static_cast<float>(rows_[0].divisor * cols_[0].divisor);
      parallel_for(
          planes_,
          [&](std::int64_t begin, std::int64_t end) {
            for (std::int64_t p = begin; p < end; ++p) y[p] = plane_sum(x + p * in_plane, in_plane) / divisor;
          },
          std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(1, in_plane)));
      return;
    }
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
  void max_forward(const float* x, float* y) const {
    const std::int64_t in_plane = in_height_ * in_width_;
    const std::int64_t out_plane = max_rows_.out_height() * max_rows_.out_width();
    parallel_for(
        planes_,
        [&](std::int64_t begin, std::int64_t end) {
          thread_local std::vector<float> line;
          line.resize(static_cast<std::size_t>(max_rows_.line_size()));
          for (std::int64_t p = begin; p < end; ++p) {
            max_rows_.run(x + p * in_plane, 0, 0, max_rows_.out_height(), y + p * out_plane, line.data());
          }
        },
        std::max<std::int64_t>(1, 4096 / std::max<std::int64_t>(1, out_plane)));
  }

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
  MaxPoolRows max_rows_;
};

}  // namespace

std::unique_ptr<Kernel> make_pooling(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& pooling = static_cast<const PoolingLayer&>(layer);
  const PoolGeometry g = pooling.geometry(inputs[0]);
  if (g.axes() > 2) return nullptr;
  return std::make_unique<PoolingKernel>(pooling, g);
}

}  // namespace espresso::cpu
