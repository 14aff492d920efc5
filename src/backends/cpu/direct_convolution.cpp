#include "backends/cpu/direct_convolution.h"

#include <algorithm>
#include <cstring>

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

}  // namespace espresso::cpu
