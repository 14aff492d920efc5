// Winograd F(4×4, 3×3) (winograd.h). Work is cut into chunks of whole tile rows (a tile row: the
// ceil(out_width / 4) tiles that make 4 rows of output of one image), sized below (kChunkBytes). With
// several chunks per thread and small filters the threads take whole chunks; otherwise each stage of
// a chunk is split (input channels, the 36 products, output channels). The element-wise transforms
// are plain loops over whole chunks, laid out so that the compiler vectorises them, compiled once for
// AVX-512 and once for AVX2 and chosen with the GEMM's instruction set.
#include "backends/cpu/winograd.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/parallel.h"
#include "espresso/net.h"

namespace espresso::cpu {
namespace {

constexpr int kPoints = 36;  // 6 × 6 transformed elements per tile
// Chunks: the transformed input and the products of one chunk fit in about kChunkBytes (a core's L2)
// when the filters are small; with large filters (36·K·C floats, read once per chunk) chunks grow to
// half their size, so that the filters' traffic stays small next to the chunk's own.
constexpr std::int64_t kChunkBytes = 2 << 20;
constexpr std::int64_t kChunkTiles = 512;  // columns per chunk at most
// Filters up to this size: whole chunks per thread when there are enough; larger ones are read once
// per chunk by all threads together (each of the 36 products on one thread).
constexpr std::int64_t kPrivateFilterBytes = 4 << 20;

// Filter transform G g G^T (6×3 · 3×3 · 3×6), in double.
constexpr double kG[6][3] = {{1.0 / 4, 0, 0},
                             {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                             {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                             {1.0 / 24, 1.0 / 12, 1.0 / 6},
                             {1.0 / 24, -1.0 / 12, 1.0 / 6},
                             {0, 0, 1}};

// The 1-D transforms, each over a run of n elements: six outputs, each its own restrict pointer (with
// one base and unknown strides the compiler would need more alias checks than it makes, and gives
// up vectorising).
// B^T d: d0..d5 at in + i·stride (+ shift for d4, d5, see below).
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

// A^T m: four outputs from m0..m5.
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

// One chunk's geometry as the transforms see it. A tile row of tiles_w tiles takes span = tiles_w + 1
// columns of B and of the products (the last one is junk, computed and never read), so that the
// passes along the tiles run over the whole chunk at once instead of over rows of a few tiles.
struct ChunkLayout {
  const float* x;
  std::int64_t channels;  // the input's (for planes of x) or the output's (for planes of out)
  std::int64_t height, width, pad_h, pad_w, tiles_h, tiles_w, span;
  std::int64_t first_row, rows;  // tile rows of the whole batch
  std::int64_t columns;          // rows · span
};

// Input channel c of the chunk into row c of each V[ξ] (the GEMM's packed B, `v`, v_size apart).
// Per tile row: B^T down the columns, straight from the 6 image rows (zero outside), into z (6 rows of
// 4·span values in image order, x = e − pad_w); each z row then by phase (x mod 4) into `phases`
// (6 × 4 rows of columns + 1). Then B along the tiles for all tile rows at once: tile t's 6 values are
// phases 0..3 at column t and phases 0, 1 at t + 1, written in runs that stay inside a panel.
[[gnu::always_inline]] inline void input_channel(const ChunkLayout& l, std::int64_t c, const float* zeros, float* z,
                                                 float* phases, float* v, std::int64_t v_size, std::int64_t panel,
                                                 std::int64_t depth_block) {
  const std::int64_t length = 4 * l.span, stride = l.columns + 1;
  for (std::int64_t r = 0; r < l.rows; ++r) {
    const std::int64_t tile_row = l.first_row + r;
    const std::int64_t n = tile_row / l.tiles_h, ty = tile_row % l.tiles_h;
    const float* plane = l.x + (n * l.channels + c) * l.height * l.width;
    const float* in[6];
    for (int i = 0; i < 6; ++i) {
      const std::int64_t y = 4 * ty - l.pad_h + i;
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
      const float* row = z + i * length;
      float* __restrict p0 = phases + (i * 4) * stride + r * l.span;
      float* __restrict p1 = p0 + stride;
      float* __restrict p2 = p0 + 2 * stride;
      float* __restrict p3 = p0 + 3 * stride;
      for (std::int64_t t = 0; t < l.span; ++t) {
        p0[t] = row[4 * t];
        p1[t] = row[4 * t + 1];
        p2[t] = row[4 * t + 2];
        p3[t] = row[4 * t + 3];
      }
    }
  }
  const std::int64_t pc = c / depth_block * depth_block, kc = std::min(depth_block, l.channels - pc);
  const std::int64_t row_base = pc * packed_b_columns(l.columns) + (c - pc) * panel;
  for (int i = 0; i < 6; ++i) {
    const float* p0 = phases + (i * 4) * stride;
    const float *p1 = p0 + stride, *p2 = p0 + 2 * stride, *p3 = p0 + 3 * stride;
    for (std::int64_t t = 0; t < l.columns; t += panel) {
      const std::int64_t run = std::min(panel, l.columns - t);
      float* out = v + row_base + t * kc + i * 6 * v_size;
      input_1d(p0 + t, p1 + t, p2 + t, p3 + t, p0 + t + 1, p1 + t + 1, run, out, out + v_size, out + 2 * v_size,
               out + 3 * v_size, out + 4 * v_size, out + 5 * v_size);
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
// (q: 6 rows × 4 columns × columns), then down (o: 4 output rows × 4 columns × columns), then each tile
// row's outputs interleaved into `row` (x = 4t + s) and finished: + bias + residual, clamped, stored.
[[gnu::always_inline]] inline void output_channel(const ChunkLayout& l, const float* m, std::int64_t m_stride,
                                                  const OutputChannel& dst, float* q, float* o, float* row) {
  const std::int64_t cols = l.columns;
  for (int r = 0; r < 6; ++r) {
    const float* in = m + r * 6 * m_stride;
    float* out = q + r * 4 * cols;
    output_1d(in, in + m_stride, in + 2 * m_stride, in + 3 * m_stride, in + 4 * m_stride, in + 5 * m_stride, cols,
              out, out + cols, out + 2 * cols, out + 3 * cols);
  }
  const std::int64_t n4 = 4 * cols;
  output_1d(q, q + n4, q + 2 * n4, q + 3 * n4, q + 4 * n4, q + 5 * n4, n4, o, o + n4, o + 2 * n4, o + 3 * n4);
  for (std::int64_t r = 0; r < l.rows; ++r) {
    const std::int64_t tile_row = l.first_row + r;
    const std::int64_t n = tile_row / l.tiles_h, ty = tile_row % l.tiles_h;
    const std::int64_t rows = std::min<std::int64_t>(4, dst.out_height - 4 * ty);
    for (std::int64_t y = 0; y < rows; ++y) {
      const float* from = o + y * n4 + r * l.span;
      for (std::int64_t t = 0; t < l.tiles_w; ++t) {
        for (int s = 0; s < 4; ++s) row[4 * t + s] = from[s * cols + t];
      }
      const std::int64_t offset = (4 * ty + y) * dst.out_width;
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

ESPRESSO_AVX512 void input_channel_avx512(const ChunkLayout& l, std::int64_t c, const float* zeros, float* z,
                                          float* phases, float* v, std::int64_t v_size, std::int64_t panel,
                                          std::int64_t depth_block) {
  input_channel(l, c, zeros, z, phases, v, v_size, panel, depth_block);
}
ESPRESSO_AVX2 void input_channel_avx2(const ChunkLayout& l, std::int64_t c, const float* zeros, float* z,
                                      float* phases, float* v, std::int64_t v_size, std::int64_t panel,
                                      std::int64_t depth_block) {
  input_channel(l, c, zeros, z, phases, v, v_size, panel, depth_block);
}
ESPRESSO_AVX512 void output_channel_avx512(const ChunkLayout& l, const float* m, std::int64_t m_stride,
                                           const OutputChannel& dst, float* q, float* o, float* row) {
  output_channel(l, m, m_stride, dst, q, o, row);
}
ESPRESSO_AVX2 void output_channel_avx2(const ChunkLayout& l, const float* m, std::int64_t m_stride,
                                       const OutputChannel& dst, float* q, float* o, float* row) {
  output_channel(l, m, m_stride, dst, q, o, row);
}

bool use_avx512() { return std::string(fast_gemm_isa()) == "avx512"; }

}  // namespace

// Tile rows [first, first + count) of the whole batch (row r: image r / tiles_h, tile row r % tiles_h).
struct WinogradConvolution::Chunk {
  std::int64_t first = 0, count = 0;
};

WinogradConvolution::WinogradConvolution(const WinogradGeometry& geometry) : g_(geometry) {
  tiles_h_ = (g_.out_height + 3) / 4;
  tiles_w_ = (g_.out_width + 3) / 4;
  const std::int64_t bytes_per_tile = kPoints * (g_.in_channels + g_.out_channels) * 4;
  filter_bytes_ = kPoints * g_.in_channels * g_.out_channels * 4;
  const std::int64_t budget = std::max(kChunkBytes, filter_bytes_ / 2);
  const std::int64_t tiles = std::clamp<std::int64_t>(budget / bytes_per_tile, 1, kChunkTiles);
  rows_per_chunk_ = std::clamp<std::int64_t>(tiles / (tiles_w_ + 1), 1, g_.batch * tiles_h_);
}

void WinogradConvolution::set_weights(const float* weights) {
  const std::int64_t k_count = g_.out_channels, c_count = g_.in_channels;
  std::vector<float> u(static_cast<std::size_t>(kPoints * k_count * c_count));
  const std::size_t plane = static_cast<std::size_t>(k_count * c_count);
  for (std::int64_t k = 0; k < k_count; ++k) {
    for (std::int64_t c = 0; c < c_count; ++c) {
      const float* g = weights + (k * c_count + c) * 9;
      double gg[6][3];  // G g
      for (int a = 0; a < 6; ++a) {
        for (int j = 0; j < 3; ++j) {
          gg[a][j] = kG[a][0] * g[j] + kG[a][1] * g[3 + j] + kG[a][2] * g[6 + j];
        }
      }
      for (int a = 0; a < 6; ++a) {
        for (int b = 0; b < 6; ++b) {
          const double v = gg[a][0] * kG[b][0] + gg[a][1] * kG[b][1] + gg[a][2] * kG[b][2];
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
  l.span = tiles_w_ + 1;
  l.first_row = chunk.first;
  l.rows = chunk.count;
  l.columns = chunk.count * l.span;
  const std::int64_t cols = l.columns;
  const std::int64_t v_size = packed_b_size(c_count, cols);
  const std::int64_t panel = gemm_panel_width(), depth_block = gemm_depth_block();
  const bool avx512 = use_avx512();
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
  // GEMM computes whole panels (the phases' slack and the zero rows make them so).
  split(c_count, [&](std::int64_t c) {
    thread_local std::vector<float> scratch;
    const std::int64_t padded = packed_b_columns(cols);
    scratch.resize(static_cast<std::size_t>(6 * 4 * l.span + 24 * (padded + 1) + g_.width));
    float* z = scratch.data();
    float* phases = z + 6 * 4 * l.span;
    float* zeros = phases + 24 * (padded + 1);
    std::fill(zeros, zeros + g_.width, 0.0f);
    for (int row = 0; row < 24; ++row) std::fill(phases + row * (padded + 1) + cols, phases + (row + 1) * (padded + 1), 0.0f);
    ChunkLayout padded_layout = l;
    padded_layout.columns = padded;  // the passes along the tiles cover the padding too (zeros)
    if (avx512) {
      input_channel_avx512(padded_layout, c, zeros, z, phases, v, v_size, panel, depth_block);
    } else {
      input_channel_avx2(padded_layout, c, zeros, z, phases, v, v_size, panel, depth_block);
    }
  });
  // The 36 products M[ξ] = U[ξ] · V[ξ], K × columns each.
  split(kPoints, [&](std::int64_t p) {
    gemm_prepacked(u_[static_cast<std::size_t>(p)], v + p * v_size, cols, m + p * k_count * cols, cols);
  });
  // Output: channel k's tiles back to 4×4 blocks.
  const std::int64_t out_plane = g_.out_height * g_.out_width;
  split(k_count, [&](std::int64_t k) {
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<std::size_t>(24 * cols + 16 * cols + 4 * tiles_w_));
    float* q = scratch.data();
    float* o = q + 24 * cols;
    float* row = o + 16 * cols;
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
    if (avx512) {
      output_channel_avx512(l, m + k * cols, k_count * cols, dst, q, o, row);
    } else {
      output_channel_avx2(l, m + k * cols, k_count * cols, dst, q, o, row);
    }
  });
}

void WinogradConvolution::forward(const float* x, const WinogradOutput& out) const {
  const std::int64_t rows = g_.batch * tiles_h_;
  const std::int64_t chunks = (rows + rows_per_chunk_ - 1) / rows_per_chunk_;
  const std::int64_t max_tiles = rows_per_chunk_ * (tiles_w_ + 1);
  const auto v_floats = static_cast<std::size_t>(kPoints * packed_b_size(g_.in_channels, max_tiles));
  const auto m_floats = static_cast<std::size_t>(kPoints * g_.out_channels * max_tiles);
  const auto chunk_at = [&](std::int64_t i) {
    Chunk chunk;
    chunk.first = i * rows_per_chunk_;
    chunk.count = std::min(rows_per_chunk_, rows - chunk.first);
    return chunk;
  };
  const int threads = in_parallel_region() ? 1 : num_threads();
  if (threads > 1 && filter_bytes_ <= kPrivateFilterBytes && (chunks >= 2 * threads || chunks % threads == 0)) {
    // Whole chunks per thread.
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
