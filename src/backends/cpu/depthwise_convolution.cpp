// Depthwise 2-D convolution on the CPU, computed directly: each (image, channel) plane is convolved
// with its own window, threads taking whole planes. im2col + sgemm spends most of its time unfolding
// here, since a channel's GEMM has M = 1. The kernels read the input plane where it is: taps whose
// input row lies outside the image are skipped per output row, and along a row each tap's loads are
// masked to the columns inside the image (masks computed once per kernel, per block of outputs and
// window column), so there is no zero-bordered copy of the plane. With AVX-512 (the GEMM's
// instruction set), at row stride 1 or 2, blocks of sixteen outputs gather every window tap in
// registers and are stored once, clamped (a fused ReLU or ReLU6), and 3×3 windows at dilation 1 and
// stride 1 or 2 (MobileNet's) have kernels of their own with the taps in registers; with AVX2 the same at stride 1 with
// blocks of eight; otherwise every tap is one multiply-add along the output row over the columns where
// it lands inside the image, which the compiler vectorises. Backward runs the layer's reference.
#include "backends/cpu/depthwise_convolution.h"

#include <immintrin.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "backends/cpu/elementwise.h"
#include "backends/cpu/gemm.h"
#include "core/cpu_features.h"

namespace espresso::cpu {
namespace {

struct PlaneGeometry {
  std::int64_t in_h, in_w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
      dilation_w;
};

// The taps [begin, end) of a window that start at input position `first` and land inside [0, size):
// first + t·dilation ∈ [0, size).
struct TapRange {
  std::int64_t begin, end;
};
TapRange taps_inside(std::int64_t first, std::int64_t kernel, std::int64_t dilation, std::int64_t size) {
  const std::int64_t begin = first >= 0 ? 0 : (-first + dilation - 1) / dilation;
  const std::int64_t end = first >= size ? 0 : std::min(kernel, (size - 1 - first) / dilation + 1);
  return {std::min(begin, end), end};
}

// Output positions [begin, end) of a row whose input o·stride + offset lies in [0, size).
TapRange outputs_inside(std::int64_t offset, std::int64_t stride, std::int64_t size, std::int64_t outputs) {
  const std::int64_t begin = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const std::int64_t end = offset >= size ? 0 : std::min(outputs, (size - 1 - offset) / stride + 1);
  return {std::min(begin, end), end};
}

// Lanes [lo, hi) of `lanes` set, as a bit mask (lo and hi clamped to [0, lanes]).
std::uint32_t lane_mask(std::int64_t lo, std::int64_t hi, int lanes) {
  lo = std::clamp<std::int64_t>(lo, 0, lanes);
  hi = std::clamp<std::int64_t>(hi, lo, lanes);
  const auto upto = [](std::int64_t n) { return n >= 32 ? ~0u : (1u << n) - 1u; };
  return upto(hi) & ~upto(lo);
}

// y (out_h x out_w) = bias + x (in_h x in_w) convolved with w (kernel_h x kernel_w), one tap at a time
// along each output row, over the outputs where that tap lands inside the image.
[[gnu::always_inline]] inline void depthwise_by_taps(const PlaneGeometry& p, const float* x, const float* w,
                                                     float bias, float* y) {
  for (std::int64_t oy = 0; oy < p.out_h; ++oy) {
    float* row = y + oy * p.out_w;
    std::fill(row, row + p.out_w, bias);
    const std::int64_t first = oy * p.stride_h - p.pad_h;
    const TapRange rows = taps_inside(first, p.kernel_h, p.dilation_h, p.in_h);
    for (std::int64_t ky = rows.begin; ky < rows.end; ++ky) {
      const float* in_row = x + (first + ky * p.dilation_h) * p.in_w;
      for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
        const float tap = w[ky * p.kernel_w + kx];
        const std::int64_t offset = kx * p.dilation_w - p.pad_w;
        const TapRange cols = outputs_inside(offset, p.stride_w, p.in_w, p.out_w);
        if (p.stride_w == 1) {
          const float* in = in_row + offset;
          for (std::int64_t ox = cols.begin; ox < cols.end; ++ox) row[ox] += tap * in[ox];
        } else {
          for (std::int64_t ox = cols.begin; ox < cols.end; ++ox) row[ox] += tap * in_row[ox * p.stride_w + offset];
        }
      }
    }
  }
}

void depthwise_baseline(const PlaneGeometry& p, const float* x, const float* w, float bias, float* y) {
  depthwise_by_taps(p, x, w, bias, y);
}

// The column masks of the vector kernels: for output block b (of `lanes` outputs) and window column
// kx, the lanes whose inputs lie inside the image row. Index b·kernel_w + kx; at stride 2 (AVX-512) the
// 32 loaded inputs of a block, else the block's lanes.
std::vector<std::uint32_t> column_masks(const PlaneGeometry& p, int lanes, bool stride2) {
  const std::int64_t blocks = (p.out_w + lanes - 1) / lanes;
  std::vector<std::uint32_t> masks(static_cast<std::size_t>(blocks * p.kernel_w));
  for (std::int64_t b = 0; b < blocks; ++b) {
    for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
      // The input column of the block's first load.
      const std::int64_t x0 = b * lanes * p.stride_w - p.pad_w + kx * p.dilation_w;
      // Stride 2 loads 32 inputs of which the last is never used: mask it off too.
      masks[static_cast<std::size_t>(b * p.kernel_w + kx)] =
          stride2 ? lane_mask(-x0, std::min<std::int64_t>(31, p.in_w - x0), 32) : lane_mask(-x0, p.in_w - x0, lanes);
    }
  }
  return masks;
}

// Stride 1: eight outputs of two rows at a time, each summing its window in registers, even and odd
// window columns apart, so that four independent chains of multiply-adds keep the FMA units busy.
// Loads are masked to the image (`lane_bits`, from column_masks with 8 lanes); a row's last block
// stores only the outputs that exist.
__attribute__((target("avx2,fma"))) void depthwise_avx2(const PlaneGeometry& p, const float* x, const float* w,
                                                        float bias, float* y, const std::uint32_t* lane_bits) {
  if (p.stride_w != 1) {
    depthwise_by_taps(p, x, w, bias, y);
    return;
  }
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (std::int64_t oy = 0; oy < p.out_h; oy += 2) {
    // A last row without a partner is computed twice, into the same place.
    const std::int64_t oy2 = std::min(oy + 1, p.out_h - 1);
    const std::int64_t first_top = oy * p.stride_h - p.pad_h, first_bottom = oy2 * p.stride_h - p.pad_h;
    const TapRange top_rows = taps_inside(first_top, p.kernel_h, p.dilation_h, p.in_h);
    const TapRange bottom_rows = taps_inside(first_bottom, p.kernel_h, p.dilation_h, p.in_h);
    float* out_top = y + oy * p.out_w;
    float* out_bottom = y + oy2 * p.out_w;
    for (std::int64_t ox = 0; ox < p.out_w; ox += 8) {
      const std::uint32_t* block_bits = lane_bits + ox / 8 * p.kernel_w;
      __m256 top_even = _mm256_set1_ps(bias), top_odd = _mm256_setzero_ps();
      __m256 bottom_even = top_even, bottom_odd = top_odd;
      for (std::int64_t ky = std::min(top_rows.begin, bottom_rows.begin);
           ky < std::max(top_rows.end, bottom_rows.end); ++ky) {
        const bool top_in = ky >= top_rows.begin && ky < top_rows.end;
        const bool bottom_in = ky >= bottom_rows.begin && ky < bottom_rows.end;
        // Input column of lane 0 for kx = 0; may lie left of the row (those lanes are masked).
        const std::int64_t column = ox - p.pad_w;
        const float* t = x + (first_top + ky * p.dilation_h) * p.in_w + column;
        const float* b = x + (first_bottom + ky * p.dilation_h) * p.in_w + column;
        const float* taps = w + ky * p.kernel_w;
        for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
          const __m256 tap = _mm256_broadcast_ss(taps + kx);
          // Lane i loads when bit i of the block's mask is set.
          const __m256i m =
              _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(block_bits[kx])), bits), bits);
          const std::int64_t at = kx * p.dilation_w;
          if (kx % 2 == 0) {
            if (top_in) top_even = _mm256_fmadd_ps(tap, _mm256_maskload_ps(t + at, m), top_even);
            if (bottom_in) bottom_even = _mm256_fmadd_ps(tap, _mm256_maskload_ps(b + at, m), bottom_even);
          } else {
            if (top_in) top_odd = _mm256_fmadd_ps(tap, _mm256_maskload_ps(t + at, m), top_odd);
            if (bottom_in) bottom_odd = _mm256_fmadd_ps(tap, _mm256_maskload_ps(b + at, m), bottom_odd);
          }
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

// One window row of one output row into its two sums (AVX-512; inlined, so the sums stay in registers).
[[gnu::always_inline]] inline __attribute__((target("avx512f,avx2,fma"))) void accumulate_window_row(
    const float* row, const float* taps, const std::uint32_t* block_bits, std::int64_t kernel_w,
    std::int64_t dilation_w, __m512& even_sum, __m512& odd_sum) {
  for (std::int64_t kx = 0; kx < kernel_w; ++kx) {
    const __m512 v = _mm512_maskz_loadu_ps(static_cast<__mmask16>(block_bits[kx]), row + kx * dilation_w);
    if (kx % 2 == 0) {
      even_sum = _mm512_fmadd_ps(_mm512_set1_ps(taps[kx]), v, even_sum);
    } else {
      odd_sum = _mm512_fmadd_ps(_mm512_set1_ps(taps[kx]), v, odd_sum);
    }
  }
}

// The same with sixteen outputs per block (AVX-512, masks from column_masks with 16 lanes), the fused
// clamp applied before the store.
__attribute__((target("avx512f,avx2,fma"))) void depthwise_avx512(const PlaneGeometry& p, const float* x,
                                                                  const float* w, float bias, float* y,
                                                                  const std::uint32_t* lane_bits, float lo,
                                                                  float hi) {
  const __m512 low = _mm512_set1_ps(lo), high = _mm512_set1_ps(hi);
  for (std::int64_t oy = 0; oy < p.out_h; oy += 2) {
    const std::int64_t oy2 = std::min(oy + 1, p.out_h - 1);
    const std::int64_t first_top = oy * p.stride_h - p.pad_h, first_bottom = oy2 * p.stride_h - p.pad_h;
    const TapRange top_rows = taps_inside(first_top, p.kernel_h, p.dilation_h, p.in_h);
    const TapRange bottom_rows = taps_inside(first_bottom, p.kernel_h, p.dilation_h, p.in_h);
    float* out_top = y + oy * p.out_w;
    float* out_bottom = y + oy2 * p.out_w;
    for (std::int64_t ox = 0; ox < p.out_w; ox += 16) {
      const std::uint32_t* block_bits = lane_bits + ox / 16 * p.kernel_w;
      __m512 top_even = _mm512_set1_ps(bias), top_odd = _mm512_setzero_ps();
      __m512 bottom_even = top_even, bottom_odd = top_odd;
      const std::int64_t column = ox - p.pad_w;
      for (std::int64_t ky = std::min(top_rows.begin, bottom_rows.begin);
           ky < std::max(top_rows.end, bottom_rows.end); ++ky) {
        const bool top_in = ky >= top_rows.begin && ky < top_rows.end;
        const bool bottom_in = ky >= bottom_rows.begin && ky < bottom_rows.end;
        const float* t = x + (first_top + ky * p.dilation_h) * p.in_w + column;
        const float* b = x + (first_bottom + ky * p.dilation_h) * p.in_w + column;
        const float* taps = w + ky * p.kernel_w;
        if (top_in && bottom_in) {
          std::int64_t kx = 0;
          for (; kx + 2 <= p.kernel_w; kx += 2) {
            const __m512 even = _mm512_set1_ps(taps[kx]), odd = _mm512_set1_ps(taps[kx + 1]);
            const __mmask16 me = static_cast<__mmask16>(block_bits[kx]),
                            mo = static_cast<__mmask16>(block_bits[kx + 1]);
            const std::int64_t at = kx * p.dilation_w, next = at + p.dilation_w;
            top_even = _mm512_fmadd_ps(even, _mm512_maskz_loadu_ps(me, t + at), top_even);
            bottom_even = _mm512_fmadd_ps(even, _mm512_maskz_loadu_ps(me, b + at), bottom_even);
            top_odd = _mm512_fmadd_ps(odd, _mm512_maskz_loadu_ps(mo, t + next), top_odd);
            bottom_odd = _mm512_fmadd_ps(odd, _mm512_maskz_loadu_ps(mo, b + next), bottom_odd);
          }
          if (kx < p.kernel_w) {
            const __m512 even = _mm512_set1_ps(taps[kx]);
            const __mmask16 me = static_cast<__mmask16>(block_bits[kx]);
            const std::int64_t at = kx * p.dilation_w;
            top_even = _mm512_fmadd_ps(even, _mm512_maskz_loadu_ps(me, t + at), top_even);
            bottom_even = _mm512_fmadd_ps(even, _mm512_maskz_loadu_ps(me, b + at), bottom_even);
          }
        } else if (top_in) {
          // The other row's window row lies outside the image (top or bottom border).
          accumulate_window_row(t, taps, block_bits, p.kernel_w, p.dilation_w, top_even, top_odd);
        } else {
          accumulate_window_row(b, taps, block_bits, p.kernel_w, p.dilation_w, bottom_even, bottom_odd);
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
// block; two masked loads of sixteen (masks from column_masks for stride 2) and one permutation pick
// the even ones, per tap.
__attribute__((target("avx512f,avx2,fma"))) void depthwise_avx512_stride2(const PlaneGeometry& p, const float* x,
                                                                          const float* w, float bias, float* y,
                                                                          const std::uint32_t* lane_bits, float lo,
                                                                          float hi) {
  const __m512 low = _mm512_set1_ps(lo), high = _mm512_set1_ps(hi);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __mmask16 all = 0xFFFF;
  for (std::int64_t oy = 0; oy < p.out_h; ++oy) {
    const std::int64_t first = oy * p.stride_h - p.pad_h;
    const TapRange rows = taps_inside(first, p.kernel_h, p.dilation_h, p.in_h);
    float* out = y + oy * p.out_w;
    for (std::int64_t ox = 0; ox < p.out_w; ox += 16) {
      const std::uint32_t* block_bits = lane_bits + ox / 16 * p.kernel_w;
      __m512 sum0 = _mm512_set1_ps(bias), sum1 = _mm512_setzero_ps();
      for (std::int64_t ky = rows.begin; ky < rows.end; ++ky) {
        const float* t = x + (first + ky * p.dilation_h) * p.in_w + 2 * ox - p.pad_w;
        const float* taps = w + ky * p.kernel_w;
        for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
          const float* at = t + kx * p.dilation_w;
          const std::uint32_t m = block_bits[kx];
          const __m512 v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(static_cast<__mmask16>(m & 0xFFFFu), at), even,
                                                  _mm512_maskz_loadu_ps(static_cast<__mmask16>(m >> 16), at + 16));
          if (kx % 2 == 0) {
            sum0 = _mm512_fmadd_ps(_mm512_set1_ps(taps[kx]), v, sum0);
          } else {
            sum1 = _mm512_fmadd_ps(_mm512_set1_ps(taps[kx]), v, sum1);
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

// 3 × 3, stride 1, dilation 1 (AVX-512; MobileNet's depthwise layers): the nine taps stay in
// registers, and two output rows at a time share their four input rows, each loaded once at each of
// the three column offsets (12 loads for 18 multiply-adds, where the general kernel loads 18). Loads
// are masked to the image (column_masks with 16 lanes); input rows outside the image are skipped.
__attribute__((target("avx512f,avx2,fma"))) void depthwise3x3_avx512(const PlaneGeometry& p, const float* x,
                                                                     const float* w, float bias, float* y,
                                                                     const std::uint32_t* lane_bits, float lo,
                                                                     float hi) {
  const __mmask16 all = 0xFFFF;
  const __m512 low = _mm512_set1_ps(lo), high = _mm512_set1_ps(hi), start = _mm512_set1_ps(bias);
  __m512 tap[9];
#pragma GCC unroll 9
  for (int i = 0; i < 9; ++i) tap[i] = _mm512_set1_ps(w[i]);
  for (std::int64_t oy = 0; oy < p.out_h; oy += 2) {
    const bool two = oy + 1 < p.out_h;
    // Input rows first..first + 3: rows 0-2 feed the top output row, rows 1-3 the bottom one.
    const std::int64_t first = oy - p.pad_h;
    const float* rows[4];
    bool inside[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const std::int64_t iy = first + r;
      inside[r] = iy >= 0 && iy < p.in_h && (r < 3 || two);
      rows[r] = inside[r] ? x + iy * p.in_w - p.pad_w : x;
    }
    float* out_top = y + oy * p.out_w;
    float* out_bottom = out_top + p.out_w;
    for (std::int64_t ox = 0; ox < p.out_w; ox += 16) {
      const std::uint32_t* bits = lane_bits + ox / 16 * 3;
      const __mmask16 m0 = static_cast<__mmask16>(bits[0]), m1 = static_cast<__mmask16>(bits[1]),
                      m2 = static_cast<__mmask16>(bits[2]);
      __m512 top0 = start, top1 = _mm512_setzero_ps(), bottom0 = start, bottom1 = _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        if (!inside[r]) continue;
        const float* at = rows[r] + ox;
        const __m512 v0 = _mm512_maskz_loadu_ps(m0, at), v1 = _mm512_maskz_loadu_ps(m1, at + 1),
                     v2 = _mm512_maskz_loadu_ps(m2, at + 2);
        if (r < 3) {
          top0 = _mm512_fmadd_ps(tap[r * 3], v0, top0);
          top1 = _mm512_fmadd_ps(tap[r * 3 + 1], v1, top1);
          top0 = _mm512_fmadd_ps(tap[r * 3 + 2], v2, top0);
        }
        if (r > 0) {
          bottom0 = _mm512_fmadd_ps(tap[r * 3 - 3], v0, bottom0);
          bottom1 = _mm512_fmadd_ps(tap[r * 3 - 2], v1, bottom1);
          bottom0 = _mm512_fmadd_ps(tap[r * 3 - 1], v2, bottom0);
        }
      }
      const std::int64_t left = p.out_w - ox;
      const __mmask16 exists = left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
      _mm512_mask_storeu_ps(out_top + ox, exists,
                            _mm512_maskz_min_ps(all, _mm512_maskz_max_ps(all, _mm512_add_ps(top0, top1), low), high));
      if (two) {
        _mm512_mask_storeu_ps(
            out_bottom + ox, exists,
            _mm512_maskz_min_ps(all, _mm512_maskz_max_ps(all, _mm512_add_ps(bottom0, bottom1), low), high));
      }
    }
  }
}

// Masks of the 3 × 3 stride-2 kernel per block of sixteen outputs: bits 0-31 for the 32 inputs loaded
// from the block's first window column, bit 32 for the one after them.
std::vector<std::uint64_t> stride2_masks(const PlaneGeometry& p) {
  const std::int64_t blocks = (p.out_w + 15) / 16;
  std::vector<std::uint64_t> masks(static_cast<std::size_t>(blocks));
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t x0 = b * 32 - p.pad_w;
    std::uint64_t m = 0;
    for (std::int64_t i = 0; i < 33; ++i) {
      if (x0 + i >= 0 && x0 + i < p.in_w) m |= std::uint64_t{1} << i;
    }
    masks[static_cast<std::size_t>(b)] = m;
  }
  return masks;
}

// 3 × 3, stride 2, dilation 1 (AVX-512): per input row, 32 inputs and the one after them are loaded
// once; the even inputs are window column 0, the odd ones column 1, and the even ones moved along by
// one lane (with the extra input last) column 2. Taps in registers.
__attribute__((target("avx512f,avx2,fma"))) void depthwise3x3s2_avx512(const PlaneGeometry& p, const float* x,
                                                                       const float* w, float bias, float* y,
                                                                       const std::uint64_t* masks, float lo,
                                                                       float hi) {
  const __mmask16 all = 0xFFFF;
  const __m512 low = _mm512_set1_ps(lo), high = _mm512_set1_ps(hi), start = _mm512_set1_ps(bias);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __m512 tap[9];
#pragma GCC unroll 9
  for (int i = 0; i < 9; ++i) tap[i] = _mm512_set1_ps(w[i]);
  for (std::int64_t oy = 0; oy < p.out_h; ++oy) {
    const std::int64_t first = oy * p.stride_h - p.pad_h;
    const TapRange window_rows = taps_inside(first, 3, 1, p.in_h);
    float* out = y + oy * p.out_w;
    for (std::int64_t ox = 0; ox < p.out_w; ox += 16) {
      const std::uint64_t m = masks[ox / 16];
      const __mmask16 m_lo = static_cast<__mmask16>(m), m_hi = static_cast<__mmask16>(m >> 16),
                      m_next = static_cast<__mmask16>(m >> 32 & 1u);
      __m512 sum0 = start, sum1 = _mm512_setzero_ps();
      for (std::int64_t ky = window_rows.begin; ky < window_rows.end; ++ky) {
        const float* at = x + (first + ky) * p.in_w + 2 * ox - p.pad_w;
        const __m512 a = _mm512_maskz_loadu_ps(m_lo, at), b = _mm512_maskz_loadu_ps(m_hi, at + 16);
        const __m512 next = _mm512_maskz_loadu_ps(m_next, at + 32);
        const __m512 c0 = _mm512_permutex2var_ps(a, even, b), c1 = _mm512_permutex2var_ps(a, odd, b);
        const __m512 c2 = _mm512_castsi512_ps(
            _mm512_maskz_alignr_epi32(all, _mm512_castps_si512(next), _mm512_castps_si512(c0), 1));
        sum0 = _mm512_fmadd_ps(tap[ky * 3], c0, sum0);
        sum1 = _mm512_fmadd_ps(tap[ky * 3 + 1], c1, sum1);
        sum0 = _mm512_fmadd_ps(tap[ky * 3 + 2], c2, sum0);
      }
      const std::int64_t left = p.out_w - ox;
      const __mmask16 exists = left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
      _mm512_mask_storeu_ps(out + ox, exists,
                            _mm512_maskz_min_ps(all, _mm512_maskz_max_ps(all, _mm512_add_ps(sum0, sum1), low), high));
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
        avx2_(cpu_has_avx2_fma()),
        avx512_(avx2_ && fast_gemm_uses_avx512() && (plane_.stride_w == 1 || plane_.stride_w == 2)) {
    const bool three = plane_.kernel_h == 3 && plane_.kernel_w == 3 && plane_.dilation_h == 1 && plane_.dilation_w == 1;
    if (avx512_ && three && plane_.stride_h == 1 && plane_.stride_w == 1) {
      shape_ = Special::three_by_three;
    } else if (avx512_ && three && plane_.stride_w == 2) {
      shape_ = Special::three_by_three_stride2;
      stride2_masks_ = stride2_masks(plane_);
    }
    if (avx512_) {
      lane_bits_ = column_masks(plane_, 16, plane_.stride_w == 2);
    } else if (avx2_ && plane_.stride_w == 1) {
      lane_bits_ = column_masks(plane_, 8, false);
    }
  }

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
            const float* in = x + i * in_plane;
            float* out = y + i * out_plane;
            const float b = bias ? bias[c] : 0.0f;
            if (avx512_) {
              // The clamp (if any) is applied in registers; ±infinity leaves values as they are.
              const float lo = clamp_ ? lo_ : -std::numeric_limits<float>::infinity();
              const float hi = clamp_ ? hi_ : std::numeric_limits<float>::infinity();
              switch (shape_) {
                case Special::three_by_three:
                  depthwise3x3_avx512(plane_, in, w + c * taps, b, out, lane_bits_.data(), lo, hi);
                  break;
                case Special::three_by_three_stride2:
                  depthwise3x3s2_avx512(plane_, in, w + c * taps, b, out, stride2_masks_.data(), lo, hi);
                  break;
                case Special::none:
                  (plane_.stride_w == 1 ? depthwise_avx512 : depthwise_avx512_stride2)(
                      plane_, in, w + c * taps, b, out, lane_bits_.data(), lo, hi);
                  break;
              }
              continue;
            }
            if (avx2_) {
              depthwise_avx2(plane_, in, w + c * taps, b, out, lane_bits_.data());
            } else {
              depthwise_baseline(plane_, in, w + c * taps, b, out);
            }
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
    if (shape_ != Special::none) return clamp_ ? "direct depthwise 3x3 avx512+clamp" : "direct depthwise 3x3 avx512";
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
  std::vector<std::uint32_t> lane_bits_;  // column_masks for the vector kernel in use
  // AVX-512 3 × 3 windows at dilation 1 and stride 1, or row stride 2, have kernels of their own.
  enum class Special { none, three_by_three, three_by_three_stride2 };
  Special shape_ = Special::none;
  std::vector<std::uint64_t> stride2_masks_;  // stride2_masks, for three_by_three_stride2
  bool clamp_ = false;
  float lo_ = 0.0f, hi_ = 0.0f;
};

}  // namespace

std::unique_ptr<Kernel> depthwise_convolution_kernel(const ConvolutionLayer& layer, const ConvGeometry& g) {
  if (g.axes() != 2 || g.group != g.in_channels || g.out_channels != g.in_channels) return nullptr;
  return std::make_unique<DepthwiseConvolutionKernel>(layer, g);
}

}  // namespace espresso::cpu
