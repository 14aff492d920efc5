// Winograd convolution on the CPU for 2-D convolutions of stride 1 and dilation 1 with one group (Lavin &
// Gray, "Fast Algorithms for Convolutional Neural Networks", 2015): F(4×4, 3×3) for 3×3 filters, each 4×4
// block of outputs from a 6×6 block of the input with 36 products per channel pair instead of 144, and
// F(2×2, 5×5) for 5×5 filters (NIN's), each 2×2 block from a 6×6 block with 36 instead of 100. The
// filters are transformed once (set_weights); a forward transforms the input's 6×6 tiles (B^T d B), runs
// 36 packed GEMMs (gemm.h: U[ξ] (K × C) · V[ξ] (C × tiles), the tiles written straight into the GEMM's
// panel layout), and transforms back (A^T m A) while adding the bias and a residual and clamping.
// Rounding: the transforms scale values by up to 100 (the points ±2 of the input transform), so the
// result is about 10× less precise than a direct sum (≈1e-6 relative vs 1e-7 for 3×3, ≈3e-6 for 5×5);
// tests allow 1e-4.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "backends/cpu/gemm.h"

namespace espresso::cpu {

struct WinogradGeometry {
  std::int64_t kernel = 3;  // the filters' side: 3 or 5 (winograd_supports_kernel)
  std::int64_t batch = 0, in_channels = 0, out_channels = 0;
  std::int64_t height = 0, width = 0, out_height = 0, out_width = 0, pad_h = 0, pad_w = 0;
};

// Where a forward's output goes and what is done to it on the way.
struct WinogradOutput {
  float* out = nullptr;  // image n, channel k at out + n·image_stride + k·out_height·out_width
  std::int64_t image_stride = 0;
  const float* bias = nullptr;      // per output channel, or null
  const float* residual = nullptr;  // added before the clamp: NCHW, the output's shape, or null
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
};

bool winograd_supports_kernel(std::int64_t kernel);

class WinogradConvolution {
 public:
  // UnsupportedError for a filter side without a transform.
  explicit WinogradConvolution(const WinogradGeometry& geometry);
  // Transforms (in double) and packs K × C × r × r row-major weights.
  void set_weights(const float* weights);
  // "winograd-f4x4" or "winograd-f2x2": the outputs per tile.
  const char* name() const { return tile_ == 4 ? "winograd-f4x4" : "winograd-f2x2"; }
  // Requires fast_gemm_available(). Threads on the pool unless called inside a parallel region.
  void forward(const float* x, const WinogradOutput& out) const;

 private:
  struct Chunk;
  void run_chunk(const Chunk& chunk, const float* x, const WinogradOutput& out, float* v, float* m,
                 bool parallel) const;

  WinogradGeometry g_;
  std::int64_t tile_ = 4;  // outputs per tile side, M
  std::int64_t tiles_h_ = 0, tiles_w_ = 0, rows_per_chunk_ = 1, filter_bytes_ = 0;
  std::vector<PackedMatrix> u_;  // the 36 transformed filter matrices, K × C each
};

}  // namespace espresso::cpu
