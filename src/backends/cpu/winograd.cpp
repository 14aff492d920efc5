// Winograd F(4×4, 3×3) and F(2×2, 5×5) (winograd.h). Both transform 6×6 input tiles with the same B^T
// (the interpolation points 0, ±1, ±2 and ∞ fix it); they differ in G (6×r, the filters) and A^T (M×6,
// the outputs), and in how far apart the tiles lie (M). Work is cut into chunks of whole tile rows (a tile
// row: the ceil(out_width / M) tiles that make M rows of output of one image), sized below (kChunkBytes).
// Where the filters are small and each thread's share of the rows fills a GEMM panel the threads take
// whole chunks; otherwise each stage of a chunk is split (input channels, the 36 products, output
// channels). The element-wise transforms
// are plain loops over whole chunks, laid out so that the compiler vectorises them, compiled once for
// AVX-512 and once for AVX2 and chosen with the GEMM's instruction set.
#include "backends/cpu/winograd.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/parallel.h"
#include "espresso/errors.h"
#include "espresso/net.h"

namespace espresso::cpu {
namespace {

constexpr int kPoints = 36;  // 6 × 6 transformed elements per tile
// Rows of the input transform's gathered taps: 6 rows of B^T d × a tile's 6 inputs along each.
constexpr std::int64_t kTapRows = 36;
// Chunks: the transformed input and the products of one chunk fit in about kChunkBytes (a core's L2)
// when the filters are small; with large filters (36·K·C floats, read once per chunk) chunks grow to
// half their size, so that the filters' traffic stays small next to the chunk's own.
constexpr std::int64_t kChunkBytes = 2 << 20;
constexpr std::int64_t kChunkTiles = 512;  // columns per chunk at most
// Filters up to this size: whole chunks per thread when there are enough; larger ones are read once
// per chunk by all threads together (each of the 36 products on one thread).
constexpr std::int64_t kPrivateFilterBytes = 4 << 20;

// Filter transform G g G^T (6×r · r×r · r×6), in double. Row i of G is the filter evaluated at point
// p_i (0, 1, −1, 2, −2: g_0 + g_1·p + … + g_{r−1}·p^{r−1}), scaled by what B^T's rows leave out (1/4, −1/6,
// −1/6, 1/24, 1/24); the last row is the point ∞, the filter's last tap.
constexpr double kG3[6 * 3] = {1.0 / 4,  0,         0,        -1.0 / 6, -1.0 / 6, -1.0 / 6,
                               -1.0 / 6, 1.0 / 6,   -1.0 / 6, 1.0 / 24, 1.0 / 12, 1.0 / 6,
                               1.0 / 24, -1.0 / 12, 1.0 / 6,  0,        0,        1};
constexpr double kG5[6 * 5] = {1.0 / 4,  0,        0,        0,       0,        -1.0 / 6,  -1.0 / 6, -1.0 / 6,
                               -1.0 / 6, -1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6, 1.0 / 6,   -1.0 / 6, 1.0 / 24,
                               1.0 / 12, 1.0 / 6,  1.0 / 3,  2.0 / 3, 1.0 / 24, -1.0 / 12, 1.0 / 6,  -1.0 / 3,
                               2.0 / 3,  0,        0,        0,       0,        1};

// Outputs per tile side: 4 for 3×3 filters, 2 for 5×5 (M + r − 1 = 6).
constexpr std::int64_t tile_for(std::int64_t kernel) { return kernel == 3 ? 4 : 2; }

// The 1-D transforms, each over a run of n elements: six outputs, each its own restrict pointer (with
// one base and unknown strides the compiler would need more alias checks than it makes, and gives
// up vectorising).
// B^T d: six outputs from d0..d5.
[[gnu::always_inline]] inline void input_1d(const float* __restrict d0p, const float* __restrict d1p,
                                            const float* __restrict d2p, const float* __restrict d3p,
                                            const float* __restrict d4p, const float* __restrict d5p,
                                            std::int64_t n, float* __restrict v0, float* __restrict v1,
                                            float* __restrict v2, float* __restrict v3, float* __restrict v4,
                                            float* __restrict v5) {
  for (std::int64_t e = 0; e < n; ++e) {
    const float d0 = d0p[e], d1 = d1p[e], d2 = d2p[e], d3 = d3p[e], d4 = d4p[e], d5 = d5p[e];
    const float a = d4 - 4.0f * d2, b = d3 - 4.0f * d1, c = d4 - d2, d = 2.0f * (d3 - d1);
    v0[e] = 4.0f * d0 - 5.0f * d2 + d4;
    v1[e] = a + b;
    v2[e] = a - b;
    v3[e] = c + d;
    v4[e] = c - d;
    v5[e] = 4.0f * d1 - 5.0f * d3 + d5;
  }
}

// A^T m for F(4, 3): four outputs from m0..m5.
[[gnu::always_inline]] inline void output_1d(const float* __restrict m0p, const float* __restrict m1p,
                                             const float* __restrict m2p, const float* __restrict m3p,
                                             const float* __restrict m4p, const float* __restrict m5p,
                                             std::int64_t n, float* __restrict o0, float* __restrict o1,
                                             float* __restrict o2, float* __restrict o3) {
  for (std::int64_t e = 0; e < n; ++e) {
    const float m0 = m0p[e], m1 = m1p[e], m2 = m2p[e], m3 = m3p[e], m4 = m4p[e], m5 = m5p[e];
    const float a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
    o0[e] = m0 + a + c;
    o1[e] = b + 2.0f * d;
    o2[e] = a + 4.0f * c;
    o3[e] = b + 8.0f * d + m5;
  }
}

// A^T m for F(2, 5): two outputs from m0..m5.
[[gnu::always_inline]] inline void output_1d(const float* __restrict m0p, const float* __restrict m1p,
                                             const float* __restrict m2p, const float* __restrict m3p,
                                             const float* __restrict m4p, const float* __restrict m5p,
                                             std::int64_t n, float* __restrict o0, float* __restrict o1) {
  for (std::int64_t e = 0; e < n; ++e) {
    const float m0 = m0p[e], m1 = m1p[e], m2 = m2p[e], m3 = m3p[e], m4 = m4p[e], m5 = m5p[e];
    o0[e] = m0 + m1 + m2 + m3 + m4;
    o1[e] = m1 - m2 + 2.0f * (m3 - m4) + m5;
  }
}

// A^T over six rows `stride` apart into M rows `out_stride` apart.
template <int M>
[[gnu::always_inline]] inline void output_rows(const float* in, std::int64_t stride, std::int64_t n,
                                               float* out, std::int64_t out_stride) {
  if constexpr (M == 4) {
    output_1d(in, in + stride, in + 2 * stride, in + 3 * stride, in + 4 * stride, in + 5 * stride, n, out,
              out + out_stride, out + 2 * out_stride, out + 3 * out_stride);
  } else {
    output_1d(in, in + stride, in + 2 * stride, in + 3 * stride, in + 4 * stride, in + 5 * stride, n, out,
              out + out_stride);
  }
}

// A tile's 6 inputs along a row from z (a row of B^T d in image order): d_j[t] = row[M·t + j].
template <int M>
[[gnu::always_inline]] inline void gather_taps(const float* __restrict row, std::int64_t n,
                                               float* __restrict d0, float* __restrict d1,
                                               float* __restrict d2, float* __restrict d3,
                                               float* __restrict d4, float* __restrict d5) {
  for (std::int64_t t = 0; t < n; ++t) {
    const float* x = row + M * t;
    d0[t] = x[0];
    d1[t] = x[1];
    d2[t] = x[2];
    d3[t] = x[3];
    d4[t] = x[4];
    d5[t] = x[5];
  }
}

// Values of a row of z: the inputs of tiles_w tiles of M outputs, 6 inputs each, M apart (at least the
// image's row and its left padding, as tiles_w·M covers the outputs).
constexpr std::int64_t z_length(std::int64_t m, std::int64_t tiles_w) { return m * tiles_w + 6 - m; }

// One chunk's geometry as the transforms see it. Its tiles are the columns of B and of the products,
// tile row after tile row with nothing between (no columns computed and thrown away: a 7 × 7 image has
// two tiles a row), so that the passes along the tiles run over the whole chunk at once instead of over
// rows of a few tiles.
struct ChunkLayout {
  const float* x;
  std::int64_t channels;  // the input's (for planes of x) or the output's (for planes of out)
  std::int64_t height, width, pad_h, pad_w, tiles_h, tiles_w;
  std::int64_t first_row, rows;  // tile rows of the whole batch
  std::int64_t columns;          // rows · tiles_w
};

// Input channel c of the chunk into row c of each V[ξ] (the GEMM's packed B, `v`, v_size apart).
// Per tile row: B^T down the columns, straight from the 6 image rows (zero outside), into z (6 rows of
// z_length(M, tiles_w) values in image order, x = e − pad_w); each z row i then into `taps` (36 rows of
// columns): row 6·i + j, column t holds z row i at x = M·t + j, tile t's j-th input. Then B along the
// tiles for all tile rows at once, contiguous loops the compiler vectorises, written in runs that stay
// inside a panel.
template <int M>
[[gnu::always_inline]] inline void input_channel(const ChunkLayout& l, std::int64_t c, const float* zeros,
                                                 float* z, float* taps, float* v, std::int64_t v_size,
                                                 std::int64_t panel, std::int64_t depth_block) {
  const std::int64_t length = z_length(M, l.tiles_w), stride = l.columns;
  for (std::int64_t r = 0; r < l.rows; ++r) {
    const std::int64_t tile_row = l.first_row + r;
    const std::int64_t n = tile_row / l.tiles_h, ty = tile_row % l.tiles_h;
    const float* plane = l.x + (n * l.channels + c) * l.height * l.width;
    const float* in[6];
    for (int i = 0; i < 6; ++i) {
      const std::int64_t y = M * ty - l.pad_h + i;
      in[i] = y >= 0 && y < l.height ? plane + y * l.width : zeros;
    }
    for (int i = 0; i < 6; ++i) {
      std::fill(z + i * length, z + i * length + l.pad_w, 0.0f);
      std::fill(z + i * length + l.pad_w + l.width, z + (i + 1) * length, 0.0f);
    }
    const std::int64_t at = l.pad_w;
    input_1d(in[0], in[1], in[2], in[3], in[4], in[5], l.width, z + at, z + length + at, z + 2 * length + at,
             z + 3 * length + at, z + 4 * length + at, z + 5 * length + at);
    for (int i = 0; i < 6; ++i) {
      float* d = taps + 6 * i * stride + r * l.tiles_w;
      gather_taps<M>(z + i * length, l.tiles_w, d, d + stride, d + 2 * stride, d + 3 * stride, d + 4 * stride,
                     d + 5 * stride);
    }
  }
  const std::int64_t pc = c / depth_block * depth_block, kc = std::min(depth_block, l.channels - pc);
  const std::int64_t row_base = pc * packed_b_columns(l.columns) + (c - pc) * panel;
  for (int i = 0; i < 6; ++i) {
    const float* d = taps + 6 * i * stride;
    for (std::int64_t t = 0; t < l.columns; t += panel) {
      const std::int64_t run = std::min(panel, l.columns - t);
      float* out = v + row_base + t * kc + i * 6 * v_size;
      input_1d(d + t, d + stride + t, d + 2 * stride + t, d + 3 * stride + t, d + 4 * stride + t,
               d + 5 * stride + t, run, out, out + v_size, out + 2 * v_size, out + 3 * v_size,
               out + 4 * v_size, out + 5 * v_size);
    }
  }
}

// Where output channel k goes and what is done to it on the way.
struct OutputChannel {
  float* out;  // image n's plane at out + n·image_stride
  std::int64_t image_stride;
  const float* residual;  // image n's plane at residual + n·residual_stride, or null
  std::int64_t residual_stride;
  std::int64_t out_height, out_width;
  float bias, lo, hi;
};

// A^T m A for output channel k: m[ξ·m_stride + column]. Along the tiles first for the whole chunk
// (q: 6 rows × M columns × columns), then down (o: M output rows × M columns × columns), then each tile
// row's outputs interleaved into `row` (x = M·t + s) and finished: + bias + residual, clamped, stored.
template <int M>
[[gnu::always_inline]] inline void output_channel(const ChunkLayout& l, const float* m, std::int64_t m_stride,
                                                  const OutputChannel& dst, float* q, float* o, float* row) {
  const std::int64_t cols = l.columns;
  for (int r = 0; r < 6; ++r) output_rows<M>(m + r * 6 * m_stride, m_stride, cols, q + r * M * cols, cols);
  const std::int64_t n_m = M * cols;
  output_rows<M>(q, n_m, n_m, o, n_m);
  for (std::int64_t r = 0; r < l.rows; ++r) {
    const std::int64_t tile_row = l.first_row + r;
    const std::int64_t n = tile_row / l.tiles_h, ty = tile_row % l.tiles_h;
    const std::int64_t rows = std::min<std::int64_t>(M, dst.out_height - M * ty);
    for (std::int64_t y = 0; y < rows; ++y) {
      const float* from = o + y * n_m + r * l.tiles_w;
      for (std::int64_t t = 0; t < l.tiles_w; ++t) {
#pragma GCC unroll 4
        for (int s = 0; s < M; ++s) row[M * t + s] = from[s * cols + t];
      }
      const std::int64_t offset = (M * ty + y) * dst.out_width;
      float* out = dst.out + n * dst.image_stride + offset;
      if (dst.residual) {
        const float* res = dst.residual + n * dst.residual_stride + offset;
        for (std::int64_t x = 0; x < dst.out_width; ++x)
          out[x] = std::min(std::max(row[x] + dst.bias + res[x], dst.lo), dst.hi);
      } else {
        for (std::int64_t x = 0; x < dst.out_width; ++x) out[x] = std::min(std::max(row[x] + dst.bias, dst.lo), dst.hi);
      }
    }
  }
}

#if defined(__x86_64__)
#define ESPRESSO_AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma,prefer-vector-width=512")))
#define ESPRESSO_AVX2 __attribute__((target("avx2,fma")))
#else
#define ESPRESSO_AVX512
#define ESPRESSO_AVX2
#endif

template <int M>
ESPRESSO_AVX512 void input_channel_avx512(const ChunkLayout& l, std::int64_t c, const float* zeros, float* z,
                                          float* taps, float* v, std::int64_t v_size, std::int64_t panel,
                                          std::int64_t depth_block) {
  input_channel<M>(l, c, zeros, z, taps, v, v_size, panel, depth_block);
}
template <int M>
ESPRESSO_AVX2 void input_channel_avx2(const ChunkLayout& l, std::int64_t c, const float* zeros, float* z,
                                      float* taps, float* v, std::int64_t v_size, std::int64_t panel,
                                      std::int64_t depth_block) {
  input_channel<M>(l, c, zeros, z, taps, v, v_size, panel, depth_block);
}
template <int M>
ESPRESSO_AVX512 void output_channel_avx512(const ChunkLayout& l, const float* m, std::int64_t m_stride,
                                           const OutputChannel& dst, float* q, float* o, float* row) {
  output_channel<M>(l, m, m_stride, dst, q, o, row);
}
template <int M>
ESPRESSO_AVX2 void output_channel_avx2(const ChunkLayout& l, const float* m, std::int64_t m_stride,
                                       const OutputChannel& dst, float* q, float* o, float* row) {
  output_channel<M>(l, m, m_stride, dst, q, o, row);
}

// The transforms for tiles of M outputs, compiled for the GEMM's instruction set.
struct Transforms {
  decltype(&input_channel_avx512<4>) input;
  decltype(&output_channel_avx512<4>) output;
};

template <int M>
Transforms transforms_for() {
  if (fast_gemm_uses_avx512()) return {input_channel_avx512<M>, output_channel_avx512<M>};
  return {input_channel_avx2<M>, output_channel_avx2<M>};
}

}  // namespace

// Tile rows [first, first + count) of the whole batch (row r: image r / tiles_h, tile row r % tiles_h).
struct WinogradConvolution::Chunk {
  std::int64_t first = 0, count = 0;
};

bool winograd_supports_kernel(std::int64_t kernel) { return kernel == 3 || kernel == 5; }

WinogradConvolution::WinogradConvolution(const WinogradGeometry& geometry)
    : g_(geometry), tile_(tile_for(geometry.kernel)) {
  if (!winograd_supports_kernel(g_.kernel))
    throw UnsupportedError("winograd convolution: no transform for " + std::to_string(g_.kernel) + "x" +
                           std::to_string(g_.kernel) + " filters (3x3 and 5x5 only)");
  tiles_h_ = (g_.out_height + tile_ - 1) / tile_;
  tiles_w_ = (g_.out_width + tile_ - 1) / tile_;
  const std::int64_t bytes_per_tile = kPoints * (g_.in_channels + g_.out_channels) * 4;
  filter_bytes_ = kPoints * g_.in_channels * g_.out_channels * 4;
  const std::int64_t budget = std::max(kChunkBytes, filter_bytes_ / 2);
  const std::int64_t tiles = std::clamp<std::int64_t>(budget / bytes_per_tile, 1, kChunkTiles);
  const std::int64_t most_rows = std::clamp<std::int64_t>(tiles / tiles_w_, 1, g_.batch * tiles_h_);
  // Down to half that many rows, the count whose tiles best fill the GEMM's panels of columns (NIN's
  // 8-tile rows: 4 rows fill one panel of 32, where 6 rows used 48 of 64 columns).
  // Fills compared as fractions columns / padded, cross-multiplied; ties keep the larger count.
  const std::int64_t panel = gemm_panel_width();
  std::int64_t best_columns = 0, best_padded = 1;
  for (std::int64_t r = most_rows; r >= std::max<std::int64_t>(1, most_rows / 2); --r) {
    const std::int64_t columns = r * tiles_w_, padded = (columns + panel - 1) / panel * panel;
    if (columns * best_padded > best_columns * padded) {
      best_columns = columns;
      best_padded = padded;
      rows_per_chunk_ = r;
    }
  }
}

void WinogradConvolution::set_weights(const float* weights) {
  const std::int64_t k_count = g_.out_channels, c_count = g_.in_channels;
  std::vector<float> u(static_cast<std::size_t>(kPoints * k_count * c_count));
  const std::size_t plane = static_cast<std::size_t>(k_count * c_count);
  const int r = static_cast<int>(g_.kernel);
  const double* transform = r == 3 ? kG3 : kG5;
  for (std::int64_t k = 0; k < k_count; ++k) {
    for (std::int64_t c = 0; c < c_count; ++c) {
      const float* g = weights + (k * c_count + c) * r * r;
      double gg[6][5] = {};  // G g
      for (int a = 0; a < 6; ++a) {
        for (int j = 0; j < r; ++j) {
          for (int i = 0; i < r; ++i) gg[a][j] += transform[a * r + i] * g[i * r + j];
        }
      }
      for (int a = 0; a < 6; ++a) {
        for (int b = 0; b < 6; ++b) {
          double v = 0.0;
          for (int j = 0; j < r; ++j) v += gg[a][j] * transform[b * r + j];
          u[static_cast<std::size_t>(a * 6 + b) * plane + static_cast<std::size_t>(k * c_count + c)] =
              static_cast<float>(v);
        }
      }
    }
  }
  u_.clear();
  for (int p = 0; p < kPoints; ++p)
    u_.emplace_back(u.data() + static_cast<std::size_t>(p) * plane, c_count, false, k_count, c_count);
}

void WinogradConvolution::run_chunk(const Chunk& chunk, const float* x, const WinogradOutput& out, float* v,
                                    float* m, bool parallel) const {
  const std::int64_t c_count = g_.in_channels, k_count = g_.out_channels;
  ChunkLayout l;
  l.x = x;
  l.channels = c_count;
  l.height = g_.height;
  l.width = g_.width;
  l.pad_h = g_.pad_h;
  l.pad_w = g_.pad_w;
  l.tiles_h = tiles_h_;
  l.tiles_w = tiles_w_;
  l.first_row = chunk.first;
  l.rows = chunk.count;
  l.columns = chunk.count * tiles_w_;
  const std::int64_t cols = l.columns;
  const std::int64_t v_size = packed_b_size(c_count, cols);
  const std::int64_t panel = gemm_panel_width(), depth_block = gemm_depth_block();
  const Transforms transforms = tile_ == 4 ? transforms_for<4>() : transforms_for<2>();
  const std::int64_t tap_stride = packed_b_columns(cols), z_size = 6 * z_length(tile_, tiles_w_);
  const auto split = [&](std::int64_t n, const auto& body) {
    if (parallel) {
      parallel_for(n, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) body(i);
      });
    } else {
      for (std::int64_t i = 0; i < n; ++i) body(i);
    }
  };

  // Input: channel c's tiles into row c of each V[ξ]; columns past the chunk's come out zero, as the
  // GEMM computes whole panels (the taps are zero there).
  split(c_count, [&](std::int64_t c) {
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<std::size_t>(z_size + kTapRows * tap_stride + g_.width));
    float* z = scratch.data();
    float* taps = z + z_size;
    float* zeros = taps + kTapRows * tap_stride;
    std::fill(zeros, zeros + g_.width, 0.0f);
    for (std::int64_t row = 0; row < kTapRows; ++row)
      std::fill(taps + row * tap_stride + cols, taps + (row + 1) * tap_stride, 0.0f);
    ChunkLayout padded_layout = l;
    padded_layout.columns = tap_stride;  // the passes along the tiles cover the padding too (zeros)
    transforms.input(padded_layout, c, zeros, z, taps, v, v_size, panel, depth_block);
  });
  // The 36 products M[ξ] = U[ξ] · V[ξ], K × columns each.
  split(kPoints, [&](std::int64_t p) {
    gemm_prepacked(u_[static_cast<std::size_t>(p)], v + p * v_size, cols, m + p * k_count * cols, cols);
  });
  // Output: channel k's tiles back to M×M blocks.
  const std::int64_t out_plane = g_.out_height * g_.out_width;
  split(k_count, [&](std::int64_t k) {
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<std::size_t>((6 * tile_ + tile_ * tile_) * cols + tile_ * tiles_w_));
    float* q = scratch.data();
    float* o = q + 6 * tile_ * cols;
    float* row = o + tile_ * tile_ * cols;
    OutputChannel dst;
    dst.out = out.out + k * out_plane;
    dst.image_stride = out.image_stride;
    dst.residual = out.residual ? out.residual + k * out_plane : nullptr;
    dst.residual_stride = k_count * out_plane;
    dst.out_height = g_.out_height;
    dst.out_width = g_.out_width;
    dst.bias = out.bias ? out.bias[k] : 0.0f;
    dst.lo = out.lo;
    dst.hi = out.hi;
    transforms.output(l, m + k * cols, k_count * cols, dst, q, o, row);
  });
}

void WinogradConvolution::forward(const float* x, const WinogradOutput& out) const {
  const std::int64_t rows = g_.batch * tiles_h_;
  const int threads = in_parallel_region() ? 1 : num_threads();
  // Whole chunks per thread where the filters are small and each thread's rows fill a GEMM panel: a
  // multiple of the threads' count of chunks, their sizes a row apart at most (NIN's 5 × 5 layer at
  // batch 1, 8 tile rows, went 6 + 2 on two threads and was no faster than the GEMM). Otherwise each
  // stage of a chunk is shared out.
  std::int64_t per_chunk = rows_per_chunk_;
  std::int64_t chunks = (rows + per_chunk - 1) / per_chunk;
  bool whole_chunks = false;
  if (threads > 1 && filter_bytes_ <= kPrivateFilterBytes && rows >= threads) {
    const std::int64_t even = (chunks + threads - 1) / threads * threads;
    if ((rows / even) * tiles_w_ >= gemm_panel_width()) {
      whole_chunks = true;
      chunks = even;
      per_chunk = (rows + chunks - 1) / chunks;
    }
  }
  const std::int64_t max_tiles = per_chunk * tiles_w_;
  const auto v_floats = static_cast<std::size_t>(kPoints * packed_b_size(g_.in_channels, max_tiles));
  const auto m_floats = static_cast<std::size_t>(kPoints * g_.out_channels * max_tiles);
  // Chunk i's rows: [i·rows / chunks, (i + 1)·rows / chunks) when whole chunks are shared out, so
  // that sizes differ by a row at most; otherwise per_chunk rows each, the last one shorter.
  const auto chunk_at = [&](std::int64_t i) {
    Chunk chunk;
    if (whole_chunks) {
      chunk.first = i * rows / chunks;
      chunk.count = (i + 1) * rows / chunks - chunk.first;
    } else {
      chunk.first = i * per_chunk;
      chunk.count = std::min(per_chunk, rows - chunk.first);
    }
    return chunk;
  };
  if (whole_chunks) {
    parallel_for(threads, [&](std::int64_t begin, std::int64_t end) {
      thread_local std::vector<float> v, m;
      v.resize(v_floats);
      m.resize(m_floats);
      for (std::int64_t slot = begin; slot < end; ++slot) {
        for (std::int64_t i = slot; i < chunks; i += threads) run_chunk(chunk_at(i), x, out, v.data(), m.data(), false);
      }
    });
    return;
  }
  thread_local std::vector<float> v, m;
  v.resize(v_floats);
  m.resize(m_floats);
  for (std::int64_t i = 0; i < chunks; ++i) run_chunk(chunk_at(i), x, out, v.data(), m.data(), threads > 1);
}

}  // namespace espresso::cpu
