#include "backends/cpu/direct_convolution.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "core/parallel.h"

namespace espresso::cpu {
namespace {

// Phase f of one input row: out[i] = row[i·S + f − pad] inside the row, 0 outside (S fixed at compile
// time for strides 1 and 2, the loops the compiler vectorises; 0: `stride`).
template <int S>
void split_row(const float* row, std::int64_t width, std::int64_t stride, std::int64_t pad, std::int64_t f,
               std::int64_t length, float* out) {
  const std::int64_t s = S > 0 ? S : stride;
  const std::int64_t first = f - pad;  // input column of out[0]
  const std::int64_t lo = std::clamp<std::int64_t>(first >= 0 ? 0 : (-first + s - 1) / s, 0, length);
  const std::int64_t hi =
      std::clamp<std::int64_t>(first >= width ? 0 : (width - 1 - first) / s + 1, lo, length);
  std::fill(out, out + lo, 0.0f);
  if constexpr (S == 1) {
    std::memcpy(out + lo, row + lo + first, static_cast<std::size_t>(hi - lo) * sizeof(float));
  } else {
    for (std::int64_t i = lo; i < hi; ++i) out[i] = row[i * s + first];
  }
  std::fill(out + hi, out + length, 0.0f);
}

}  // namespace

bool DirectConvolution::applies(const ConvWindows& shape, std::int64_t channels) {
  return channels * shape.kernel_h * shape.kernel_w <= gemm_depth_block() && shape.out_width > 0 &&
         shape.out_height > 0;
}

DirectConvolution::DirectConvolution(const ConvWindows& shape, std::int64_t channels)
    : shape_(shape), channels_(channels) {
  const ConvWindows& g = shape_;
  const std::int64_t reach_h = (g.kernel_h - 1) * g.dilation_h, reach_w = (g.kernel_w - 1) * g.dilation_w;
  padded_height_ = (g.out_height - 1) * g.stride_h + reach_h + 1;  // the rows the last output row reads
  // A phase holds every output column's inputs for the farthest tap, and whole tiles of them: the
  // micro-kernel loads gemm_panel_width() columns at a time. Phases no tap reads (a stride wider than the
  // window, as in 1 × 1 stride-2 shortcuts) are left out.
  phase_length_ = packed_b_columns(g.out_width) + reach_w / g.stride_w;
  phases_ = std::min(g.stride_w, reach_w + 1);
  row_stride_ = phases_ * phase_length_;
  for (std::int64_t c = 0; c < channels_; ++c) {
    for (std::int64_t ky = 0; ky < g.kernel_h; ++ky) {
      for (std::int64_t kx = 0; kx < g.kernel_w; ++kx) {
        const std::int64_t x = kx * g.dilation_w;
        taps_.push_back((c * padded_height_ + ky * g.dilation_h) * row_stride_ +
                        x % g.stride_w * phase_length_ + x / g.stride_w);
      }
    }
  }
}

void DirectConvolution::split_phases(const float* image, float* phases) const {
  const ConvWindows& g = shape_;
  const auto split = g.stride_w == 1 ? split_row<1> : g.stride_w == 2 ? split_row<2> : split_row<0>;
  parallel_for(
      channels_ * padded_height_,
      [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t q = begin; q < end; ++q) {
          const std::int64_t c = q / padded_height_, y = q % padded_height_ - g.pad_h;
          float* out = phases + q * row_stride_;
          if (y < 0 || y >= g.height) {
            std::fill(out, out + row_stride_, 0.0f);
            continue;
          }
          const float* row = image + c * g.plane() + y * g.width;
          for (std::int64_t f = 0; f < phases_; ++f)
            split(row, g.width, g.stride_w, g.pad_w, f, phase_length_, out + f * phase_length_);
        }
      },
      16);
}

void DirectConvolution::output_rows(const PackedMatrix& weights, const float* phases, std::int64_t row0,
                                    std::int64_t row1, float* c, std::int64_t ldc,
                                    const GemmEpilogue& epilogue, float beta) const {
  GemmEpilogue e = epilogue;
  for (std::int64_t r = row0; r < row1; ++r) {
    const std::int64_t shift = (r - row0) * shape_.out_width;
    if (epilogue.residual) e.residual = epilogue.residual + shift;
    gemm_row_table(weights, phases + r * shape_.stride_h * row_stride_, taps_.data(), shape_.out_width, beta,
                   c + shift, ldc, e);
  }
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f"))) void DirectConvolution::pack_positions(const float* phases,
                                                                          PackedMatrix& positions,
                                                                          std::int64_t panel0,
                                                                          std::int64_t panel1) const {
  const ConvWindows& g = shape_;
  const std::int64_t n = g.out_height * g.out_width, mr = positions.panel_height();
  const std::int64_t depth = positions.depth(), block_depth = gemm_depth_block();
  for (std::int64_t panel = panel0; panel < panel1; ++panel) {
    // The panel's positions by output row: lanes [first, end) read at base + lane for every tap.
    struct Run {
      __mmask16 lanes;
      std::int64_t base;
    };
    Run runs[16];
    int count = 0;
    const std::int64_t i0 = panel * mr, i1 = std::min(n, i0 + mr);
    for (std::int64_t i = i0; i < i1;) {
      const std::int64_t oy = i / g.out_width, ox = i % g.out_width;
      const std::int64_t end = std::min(i1, (oy + 1) * g.out_width);
      const auto first = static_cast<unsigned>(i - i0), last = static_cast<unsigned>(end - i0);
      runs[count++] = {static_cast<__mmask16>(((1u << last) - 1) & ~((1u << first) - 1)),
                       oy * g.stride_h * row_stride_ + ox - static_cast<std::int64_t>(first)};
      i = end;
    }
    const __mmask16 rows = static_cast<__mmask16>((1u << (i1 - i0)) - 1);
    for (std::int64_t pc = 0; pc < depth; pc += block_depth) {
      float* out = positions.mutable_panel(pc / block_depth, panel);
      const std::int64_t kc = std::min(block_depth, depth - pc);
      for (std::int64_t p = 0; p < kc; ++p) {
        const float* tap = phases + taps_[static_cast<std::size_t>(pc + p)];
        __m512 v = _mm512_setzero_ps();
        for (int r = 0; r < count; ++r) v = _mm512_mask_loadu_ps(v, runs[r].lanes, tap + runs[r].base);
        _mm512_mask_storeu_ps(out + p * mr, rows, v);
      }
    }
  }
}
#else
void DirectConvolution::pack_positions(const float*, PackedMatrix&, std::int64_t, std::int64_t) const {}
#endif

}  // namespace espresso::cpu
