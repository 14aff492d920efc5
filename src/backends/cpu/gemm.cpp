// The blocked GEMM of gemm.h. Loop nest (per thread, over its share of C): columns in blocks of
// kColumnBlock, depth in blocks of kDepthBlock (B's block packed into panels of NR columns, which
// stay in L2), then for each column panel (L1) every 6- or 12-row panel of A. The micro-kernels keep an MR ×
// NR tile of C in registers (12 vector accumulators) and apply beta, the bias, the residual and the
// clamp as they store it; partial tiles at the edges go through a small buffer.
#include "backends/cpu/gemm.h"

#include <immintrin.h>

// GCC 12's AVX-512 min/max intrinsics pass an undefined register as their unused mask source, which
// -Wmaybe-uninitialized reports in every caller.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "espresso/net.h"

namespace espresso::cpu {
namespace {

constexpr int kRows = 6;                    // MR of the AVX2 micro-kernel
constexpr int kRows512 = 12;                // MR of the AVX-512 one (24 of 32 registers accumulate)
constexpr std::int64_t kDepthBlock = 256;   // KC
constexpr std::int64_t kColumnBlock = 384;  // NC, a multiple of both NRs
constexpr std::int64_t kMaxColumns = 32;    // the widest NR
// How far ahead (floats) the micro-kernels prefetch A. Packed panels lie one after another, so this
// reaches into the next panels: a layer's weights stream from memory at batch 1 (ResNet-18's 9 MiB
// 3x3 convolutions do not stay in cache), and the hardware prefetcher alone left the kernel waiting.
constexpr std::int64_t kPrefetchAhead = 768;
// With at most this many row panels in A, B (a plain matrix: a 1 × 1 convolution's image) is read
// where it is: each element of a packed copy would be used by only one or two panels, so packing
// cost about as much as the product (MobileNetV2's and SqueezeNet's narrow projections and squeezes).
constexpr std::int64_t kDirectPanels = 2;
// How far ahead (floats: two AVX-512 tiles, four AVX2 ones) a B read in place is prefetched along its row
// (past B's end only as a prefetch, which never faults). Each of its depth rows
// is a separate stream a whole image plane apart (SqueezeNet's 128 × 3025 squeezes), more than the
// hardware prefetcher follows: without this the squeezes ran at a third of the kernel's speed.
constexpr std::int64_t kPrefetchDirectB = 2 * kMaxColumns;

enum class Isa { none, avx2, avx512 };

bool has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool supported = __builtin_cpu_supports("avx512f") != 0;
  return supported;
#else
  return false;
#endif
}

Isa choose_isa() {
  const char* forced = std::getenv("ESPRESSO_GEMM");
  const std::string want = forced ? forced : "";
  if (want == "openblas" || !cpu_has_avx2_fma()) return Isa::none;
  if (want == "avx2" || !has_avx512()) return Isa::avx2;
  return Isa::avx512;
}

Isa isa() {
  static const Isa chosen = choose_isa();
  return chosen;
}

// Rows of a packed panel of A: the micro-kernel's MR.
std::int64_t panel_rows() { return isa() == Isa::avx512 ? kRows512 : kRows; }

// The panel height for an A of m rows: the tallest (up to the micro-kernel's MR) whose last panel keeps at
// least 4 rows where any does. A panel of one to three rows leaves the micro-kernel waiting on its few
// accumulators' latency (a 49-position image's last row in 12-row panels took 7 % of the product).
std::int64_t panel_rows_for(std::int64_t m) {
  for (std::int64_t mr = panel_rows(); mr >= 4; --mr) {
    if (m % mr == 0 || m % mr >= 4) return mr;
  }
  return panel_rows();
}

// How one tile's stored values are formed from its accumulators.
struct TileOps {
  bool accumulate = false;  // add to C (a later depth block)
  float beta = 0.0f;        // else C = acc + beta·C (C is not read when beta is 0)
  bool last = false;        // the last depth block: apply the epilogue
  const float* row_bias = nullptr;  // at the tile's first row
  const float* col_bias = nullptr;  // at the tile's first column
  const float* residual = nullptr;  // at the tile's first element
  std::int64_t ldr = 0;
  bool clamp = false;
  float lo = 0.0f, hi = 0.0f;
  int cols = 32;  // valid columns of the tile (the AVX-512 kernel masks the rest)
  std::int64_t ldb = 0;  // B's row stride when read unpacked; 0: a packed panel (stride NR)
  const std::int64_t* b_rows = nullptr;  // kernels with RowTable: B's row p read in place at b + b_rows[p]
  bool stream = false;   // whole aligned tile rows stored past the caches (GemmEpilogue::bypass_cache)
  std::int64_t a_stride = 0;  // floats from one depth step of A's panel to the next: its height
};

#if defined(__x86_64__) || defined(__i386__)
// Rows computes the first `Rows` rows of a panel (A's stride stays the panel's height): the last panel of an
// A whose row count is not a multiple of MR. RowTable: B's rows are read in place wherever ops.b_rows puts
// them (a direct convolution's taps).
template <int Rows, bool RowTable = false>
__attribute__((target("avx2,fma"))) void kernel_avx2(std::int64_t depth, const float* a, const float* b,
                                                     float* c, std::int64_t ldc, const TileOps& ops) {
  __m256 acc[Rows][2];
#pragma GCC unroll 6
  for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  const std::int64_t b_step = RowTable ? 0 : ops.ldb != 0 ? ops.ldb : 16;
  for (std::int64_t p = 0; p < depth; ++p) {
    _mm_prefetch(reinterpret_cast<const char*>(a + kPrefetchAhead), _MM_HINT_T0);
    if (!RowTable && ops.ldb != 0)
      _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchDirectB), _MM_HINT_T0);
    const float* row_b = RowTable ? b + ops.b_rows[p] : b;
    const __m256 b0 = _mm256_loadu_ps(row_b);
    const __m256 b1 = _mm256_loadu_ps(row_b + 8);
#pragma GCC unroll 6
    for (int r = 0; r < Rows; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r);
      acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
    }
    a += ops.a_stride;
    b += b_step;
  }
  const __m256 beta = _mm256_set1_ps(ops.beta);
  const __m256 lo = _mm256_set1_ps(ops.lo), hi = _mm256_set1_ps(ops.hi);
#pragma GCC unroll 6
  for (int r = 0; r < Rows; ++r) {
    float* row = c + r * ldc;
    __m256 v0 = acc[r][0], v1 = acc[r][1];
    if (ops.accumulate) {
      v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
      v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row + 8));
    } else if (ops.beta != 0.0f) {
      v0 = _mm256_fmadd_ps(beta, _mm256_loadu_ps(row), v0);
      v1 = _mm256_fmadd_ps(beta, _mm256_loadu_ps(row + 8), v1);
    }
    if (ops.last) {
      if (ops.row_bias) {
        const __m256 bias = _mm256_broadcast_ss(ops.row_bias + r);
        v0 = _mm256_add_ps(v0, bias);
        v1 = _mm256_add_ps(v1, bias);
      }
      if (ops.col_bias) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ops.col_bias));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ops.col_bias + 8));
      }
      if (ops.residual) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ops.residual + r * ops.ldr));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ops.residual + r * ops.ldr + 8));
      }
      if (ops.clamp) {
        v0 = _mm256_min_ps(_mm256_max_ps(v0, lo), hi);
        v1 = _mm256_min_ps(_mm256_max_ps(v1, lo), hi);
      }
    }
    // Whole 64-byte lines only: a streamed partial line costs more than the read it saves.
    if (ops.stream && (reinterpret_cast<std::uintptr_t>(row) & 63) == 0) {
      _mm256_stream_ps(row, v0);
      _mm256_stream_ps(row + 8, v1);
    } else {
      _mm256_storeu_ps(row, v0);
      _mm256_storeu_ps(row + 8, v1);
    }
  }
}

// Vectors: 2 for a whole 32-column tile, 1 for an edge tile of at most 16 columns (half the
// multiply-adds: the last tile of 13 × 13, 14 × 14, 28 × 28 and 112-wide images).
template <int Rows, bool RowTable = false, int Vectors = 2>
__attribute__((target("avx512f,avx2,fma"))) void kernel_avx512(std::int64_t depth, const float* a,
                                                               const float* b, float* c, std::int64_t ldc,
                                                               const TileOps& ops) {
  __m512 acc[Rows][Vectors];
#pragma GCC unroll 12
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v < Vectors; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  const std::int64_t b_step = RowTable ? 0 : ops.ldb != 0 ? ops.ldb : 32;
  for (std::int64_t p = 0; p < depth; ++p) {
    _mm_prefetch(reinterpret_cast<const char*>(a + kPrefetchAhead), _MM_HINT_T0);
    if (!RowTable && ops.ldb != 0) {
      for (int v = 0; v < Vectors; ++v)
        _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchDirectB + 16 * v), _MM_HINT_T0);
    }
    const float* row_b = RowTable ? b + ops.b_rows[p] : b;
    __m512 bv[Vectors];
    for (int v = 0; v < Vectors; ++v) bv[v] = _mm512_loadu_ps(row_b + 16 * v);
#pragma GCC unroll 12
    for (int r = 0; r < Rows; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r]);
      for (int v = 0; v < Vectors; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
    }
    a += ops.a_stride;
    b += b_step;
  }
  // Columns past ops.cols are neither read nor written (an edge tile of C).
  __mmask16 m[Vectors];
  for (int v = 0; v < Vectors; ++v) {
    const int n = std::clamp(ops.cols - 16 * v, 0, 16);
    m[v] = n == 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
  }
  const __m512 beta = _mm512_set1_ps(ops.beta);
  const __m512 lo = _mm512_set1_ps(ops.lo), hi = _mm512_set1_ps(ops.hi);
#pragma GCC unroll 12
  for (int r = 0; r < Rows; ++r) {
    float* row = c + r * ldc;
    const bool stream =
        ops.stream && ops.cols == 16 * Vectors && (reinterpret_cast<std::uintptr_t>(row) & 63) == 0;
    for (int v = 0; v < Vectors; ++v) {
      __m512 x = acc[r][v];
      float* out = row + 16 * v;
      if (ops.accumulate) {
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m[v], out));
      } else if (ops.beta != 0.0f) {
        x = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m[v], out), x);
      }
      if (ops.last) {
        if (ops.row_bias) x = _mm512_add_ps(x, _mm512_set1_ps(ops.row_bias[r]));
        if (ops.col_bias) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m[v], ops.col_bias + 16 * v));
        if (ops.residual)
          x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m[v], ops.residual + r * ops.ldr + 16 * v));
        if (ops.clamp) x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
      }
      if (stream) {
        _mm512_stream_ps(out, x);
      } else {
        _mm512_mask_storeu_ps(out, m[v], x);
      }
    }
  }
}
#else
template <int Rows, bool RowTable = false>
void kernel_avx2(std::int64_t, const float*, const float*, float*, std::int64_t, const TileOps&) {}
template <int Rows, bool RowTable = false, int Vectors = 2>
void kernel_avx512(std::int64_t, const float*, const float*, float*, std::int64_t, const TileOps&) {}
#endif

using Kernel = void (*)(std::int64_t, const float*, const float*, float*, std::int64_t, const TileOps&);

// The kernels for 1 .. sizeof(Rows) rows of one instruction set, B's rows from a table or not, tiles of
// one or two AVX-512 vectors.
template <bool Avx512, bool RowTable, int Vectors, int... Rows>
constexpr std::array<Kernel, sizeof...(Rows)> kernels(std::integer_sequence<int, Rows...>) {
  if constexpr (Avx512) {
    return {kernel_avx512<Rows + 1, RowTable, Vectors>...};
  } else {
    return {kernel_avx2<Rows + 1, RowTable>...};
  }
}

// The micro-kernel for a panel's first `rows` rows (1 ≤ rows ≤ MR), B's rows from a table or not, for a
// tile of `cols` columns (AVX-512: a narrower kernel for an edge tile of at most 16).
Kernel kernel_for(std::int64_t rows, bool row_table, std::int64_t cols) {
  constexpr auto avx2_rows = std::make_integer_sequence<int, kRows>();
  constexpr auto avx512_rows = std::make_integer_sequence<int, kRows512>();
  static constexpr auto avx2 = kernels<false, false, 2>(avx2_rows);
  static constexpr auto avx2_table = kernels<false, true, 2>(avx2_rows);
  static constexpr auto avx512 = kernels<true, false, 2>(avx512_rows);
  static constexpr auto avx512_table = kernels<true, true, 2>(avx512_rows);
  static constexpr auto avx512_half = kernels<true, false, 1>(avx512_rows);
  static constexpr auto avx512_half_table = kernels<true, true, 1>(avx512_rows);
  const auto i = static_cast<std::size_t>(rows - 1);
  if (isa() == Isa::avx512 && cols <= 16) return row_table ? avx512_half_table[i] : avx512_half[i];
  if (isa() == Isa::avx512) return row_table ? avx512_table[i] : avx512[i];
  return row_table ? avx2_table[i] : avx2[i];
}

// An edge tile (fewer than NR columns): the kernel writes the raw product into a buffer,
// then the valid part is formed here as the kernel would have.
void edge_tile(Kernel kernel, std::int64_t width, std::int64_t depth, const float* a, const float* b, float* c,
               std::int64_t ldc, std::int64_t rows, std::int64_t cols, const TileOps& ops) {
  alignas(64) float tile[kRows512 * kMaxColumns];
  TileOps raw;
  raw.cols = static_cast<int>(width);
  raw.b_rows = ops.b_rows;
  raw.a_stride = ops.a_stride;
  kernel(depth, a, b, tile, width, raw);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t j = 0; j < cols; ++j) {
      float v = tile[r * width + j];
      float& out = c[r * ldc + j];
      if (ops.accumulate) {
        v += out;
      } else if (ops.beta != 0.0f) {
        v += ops.beta * out;
      }
      if (ops.last) {
        if (ops.row_bias) v += ops.row_bias[r];
        if (ops.col_bias) v += ops.col_bias[j];
        if (ops.residual) v += ops.residual[r * ops.ldr + j];
        if (ops.clamp) v = std::min(std::max(v, ops.lo), ops.hi);
      }
      out = v;
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
// Whole panels of B's rows, inline: a memcpy call per 64- or 128-byte row cost more than the copy
// (pointwise convolutions spent ~10 % of MobileNetV2's time in those calls).
__attribute__((target("avx512f"))) void copy_panel_rows32(const float* src, std::int64_t ldb, std::int64_t depth,
                                                          float* panel) {
  for (std::int64_t p = 0; p < depth; ++p, src += ldb, panel += 32) {
    _mm512_storeu_ps(panel, _mm512_loadu_ps(src));
    _mm512_storeu_ps(panel + 16, _mm512_loadu_ps(src + 16));
  }
}
__attribute__((target("avx2"))) void copy_panel_rows16(const float* src, std::int64_t ldb, std::int64_t depth,
                                                       float* panel) {
  for (std::int64_t p = 0; p < depth; ++p, src += ldb, panel += 16) {
    _mm256_storeu_ps(panel, _mm256_loadu_ps(src));
    _mm256_storeu_ps(panel + 8, _mm256_loadu_ps(src + 8));
  }
}
#endif

// B's rows [p0, p0 + depth) and columns [j0, j0 + cols) into panels of `width` columns, k-major,
// zero beyond the last column.
void pack_matrix(bool transpose, const float* b, std::int64_t ldb, std::int64_t p0, std::int64_t depth,
                 std::int64_t j0, std::int64_t cols, std::int64_t width, float* out) {
  for (std::int64_t j = 0; j < cols; j += width) {
    const std::int64_t w = std::min(width, cols - j);
    float* panel = out + j * depth;
    if (!transpose) {
      const float* src = b + p0 * ldb + j0 + j;
      if (w == width) {
#if defined(__x86_64__) || defined(__i386__)
        if (width == 32) {
          copy_panel_rows32(src, ldb, depth, panel);
          continue;
        }
        if (width == 16) {
          copy_panel_rows16(src, ldb, depth, panel);
          continue;
        }
#endif
        for (std::int64_t p = 0; p < depth; ++p)
          std::memcpy(panel + p * width, src + p * ldb, static_cast<std::size_t>(width) * sizeof(float));
      } else {
        for (std::int64_t p = 0; p < depth; ++p) {
          float* dst = panel + p * width;
          std::int64_t q = 0;
          for (; q < w; ++q) dst[q] = src[p * ldb + q];
          for (; q < width; ++q) dst[q] = 0.0f;
        }
      }
    } else {
      for (std::int64_t q = 0; q < width; ++q) {
        if (q < w) {
          const float* src = b + (j0 + j + q) * ldb + p0;
          for (std::int64_t p = 0; p < depth; ++p) panel[p * width + q] = src[p];
        } else {
          for (std::int64_t p = 0; p < depth; ++p) panel[p * width + q] = 0.0f;
        }
      }
    }
  }
}

// Runs of a panel's columns along one output row: slots [begin, end) read image row y0 + dy at
// columns x0 + dx + t·stride_w (t counted from begin).
struct WindowRun {
  std::int64_t begin, end, y0, x0;
};

#if defined(__x86_64__) || defined(__i386__)
// The windows' panels at 32 columns (AVX-512), for row strides 1 and 2 (S): each panel row is built in
// two registers and stored once; each run fills its lanes with merge-masked loads (at stride 2, 32
// inputs loaded per 16 lanes and the even ones picked), lanes outside the image or past the last
// column stay 0. What depends only on the window tap and the panel (the runs' lanes, masks and input
// offsets) is worked out once per tap and reused for every channel.
template <int S>
__attribute__((target("avx512f"))) void pack_windows32(const ConvWindows& w, std::int64_t p0, std::int64_t depth,
                                                       std::int64_t panels, const std::vector<WindowRun>& runs,
                                                       const std::vector<std::size_t>& first_run, float* out) {
  struct Load {
    std::int64_t offset;  // of the half's lane 0 in the channel's plane (lanes outside it are masked)
    std::uint32_t wide;   // stride 2: which of the 32 inputs from offset to load
    __mmask16 lanes;      // which lanes of the half this load fills
    int half;
  };
  const std::int64_t taps = w.kernel_h * w.kernel_w;
  const std::int64_t plane_size = w.plane();
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  thread_local std::vector<Load> loads;
  thread_local std::vector<std::size_t> first_load;  // per (tap, panel)
  const std::int64_t tap0 = p0 % taps, used_taps = std::min(taps, depth);
  loads.clear();
  first_load.assign(static_cast<std::size_t>(used_taps * panels + 1), 0);
  for (std::int64_t i = 0; i < used_taps; ++i) {
    const std::int64_t tap = (tap0 + i) % taps;
    const std::int64_t dy = tap / w.kernel_w * w.dilation_h, dx = tap % w.kernel_w * w.dilation_w;
    for (std::int64_t q = 0; q < panels; ++q) {
      first_load[static_cast<std::size_t>(i * panels + q)] = loads.size();
      for (std::size_t r = first_run[static_cast<std::size_t>(q)]; r < first_run[static_cast<std::size_t>(q) + 1]; ++r) {
        const WindowRun& run = runs[r];
        const std::int64_t y = run.y0 + dy;
        if (y < 0 || y >= w.height) continue;
        const std::int64_t x = run.x0 + dx;  // input column of slot run.begin
        // Slots whose input column x + (t − begin)·S lies in [0, width).
        const std::int64_t lo = std::clamp(run.begin + (x < 0 ? (-x + S - 1) / S : 0), run.begin, run.end);
        const std::int64_t hi = std::clamp(run.begin + (w.width - x + S - 1) / S, lo, run.end);
        for (int h = 0; h < 2; ++h) {
          const std::int64_t a = std::max<std::int64_t>(lo, 16 * h), b = std::min<std::int64_t>(hi, 16 * h + 16);
          if (a >= b) continue;
          Load load;
          load.offset = y * w.width + x + (16 * h - run.begin) * S;
          load.lanes = static_cast<__mmask16>(((1u << (b - a)) - 1u) << (a - 16 * h));
          load.wide = 0;
          for (std::int64_t k = a - 16 * h; k < b - 16 * h; ++k) load.wide |= 1u << (2 * k);
          load.half = h;
          loads.push_back(load);
        }
      }
    }
  }
  first_load.back() = loads.size();
  for (std::int64_t p = 0; p < depth; ++p) {
    const std::int64_t i = p % taps;  // (p0 + p) − tap0 ≡ p (mod taps)
    const float* plane = w.image + (p0 + p) / taps * plane_size;
    const std::size_t* starts = first_load.data() + i * panels;
    float* dst = out + p * 32;
    for (std::int64_t q = 0; q < panels; ++q, dst += 32 * depth) {
      __m512 low = _mm512_setzero_ps(), high = _mm512_setzero_ps();
      for (std::size_t l = starts[q]; l < starts[q + 1]; ++l) {
        const Load& load = loads[l];
        const float* base = plane + load.offset;
        __m512 v;
        if constexpr (S == 1) {
          v = _mm512_maskz_loadu_ps(load.lanes, base);
        } else {
          v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(static_cast<__mmask16>(load.wide), base), even,
                                     _mm512_maskz_loadu_ps(static_cast<__mmask16>(load.wide >> 16), base + 16));
        }
        if (load.half == 0) {
          low = _mm512_mask_mov_ps(low, load.lanes, v);
        } else {
          high = _mm512_mask_mov_ps(high, load.lanes, v);
        }
      }
      _mm512_storeu_ps(dst, low);
      _mm512_storeu_ps(dst + 16, high);
    }
  }
}
#endif

// The same from a convolution's windows: row p = (channel, ky, kx), column j = (oy, ox) reads the
// image at (oy·stride − pad + ky·dilation, ox·stride − pad + kx·dilation), 0 outside it.
void pack_windows(const ConvWindows& w, std::int64_t p0, std::int64_t depth, std::int64_t j0, std::int64_t cols,
                  std::int64_t width, float* out) {
  const std::int64_t taps = w.kernel_h * w.kernel_w;
  const std::int64_t panels = (cols + width - 1) / width;
  // Each panel's columns as runs along one output row: slots [begin, end) read image row y0 + dy at
  // columns x0 + dx + t·stride_w. Slots past the last column stay 0.
  using Run = WindowRun;
  thread_local std::vector<Run> runs;
  thread_local std::vector<std::size_t> first_run;
  runs.clear();
  first_run.assign(static_cast<std::size_t>(panels + 1), 0);
  std::int64_t oy = j0 / w.out_width, ox = j0 % w.out_width;
  for (std::int64_t q = 0; q < panels; ++q) {
    first_run[static_cast<std::size_t>(q)] = runs.size();
    const std::int64_t slots = std::min(width, cols - q * width);
    for (std::int64_t t = 0; t < slots;) {
      const std::int64_t len = std::min(slots - t, w.out_width - ox);
      runs.push_back({t, t + len, oy * w.stride_h - w.pad_h, ox * w.stride_w - w.pad_w});
      t += len;
      ox += len;
      if (ox == w.out_width) {
        ox = 0;
        ++oy;
      }
    }
  }
  first_run[static_cast<std::size_t>(panels)] = runs.size();
#if defined(__x86_64__) || defined(__i386__)
  if (width == 32 && w.stride_w <= 2) {
    (w.stride_w == 1 ? pack_windows32<1> : pack_windows32<2>)(w, p0, depth, panels, runs, first_run, out);
    return;
  }
#endif
  for (std::int64_t p = 0; p < depth; ++p) {
    const std::int64_t channel = (p0 + p) / taps, tap = (p0 + p) % taps;
    const std::int64_t dy = tap / w.kernel_w * w.dilation_h, dx = tap % w.kernel_w * w.dilation_w;
    const float* plane = w.image + channel * w.plane();
    for (std::int64_t q = 0; q < panels; ++q) {
      float* dst = out + q * width * depth + p * width;
      std::int64_t filled = 0;
      for (std::size_t r = first_run[static_cast<std::size_t>(q)]; r < first_run[static_cast<std::size_t>(q) + 1]; ++r) {
        const Run& run = runs[r];
        const std::int64_t y = run.y0 + dy;
        if (y < 0 || y >= w.height) {
          std::fill(dst + run.begin, dst + run.end, 0.0f);
          continue;
        }
        const float* line = plane + y * w.width;
        const std::int64_t x = run.x0 + dx;
        if (w.stride_w == 1) {
          // Slots whose x = x + (t − begin) lies in [0, width).
          const std::int64_t lo = std::clamp(run.begin - x, run.begin, run.end);
          const std::int64_t hi = std::clamp(run.begin + w.width - x, lo, run.end);
          std::fill(dst + run.begin, dst + lo, 0.0f);
          if (hi > lo) std::memcpy(dst + lo, line + x + (lo - run.begin), static_cast<std::size_t>(hi - lo) * sizeof(float));
          std::fill(dst + hi, dst + run.end, 0.0f);
        } else {
          // Strided: slots whose x + (t − begin)·stride lies in [0, width), copied without checks.
          const std::int64_t s = w.stride_w;
          const std::int64_t lo = std::clamp(run.begin + (x < 0 ? (-x + s - 1) / s : 0), run.begin, run.end);
          const std::int64_t hi =
              std::clamp(run.begin + (w.width - x + s - 1) / s, lo, run.end);  // first slot with x ≥ width
          std::fill(dst + run.begin, dst + lo, 0.0f);
          const float* src = line + x + (lo - run.begin) * s;
          for (std::int64_t t = lo; t < hi; ++t, src += s) dst[t] = *src;
          std::fill(dst + hi, dst + run.end, 0.0f);
        }
        filled = run.end;
      }
      std::fill(dst + filled, dst + width, 0.0f);
    }
  }
}

struct Problem {
  const PackedMatrix* a = nullptr;
  // B: a matrix, or windows when `windows` is set.
  bool transpose_b = false;
  const float* b = nullptr;
  std::int64_t ldb = 0;
  const ConvWindows* windows = nullptr;
  // With `direct`: B's row p at b + b_rows[p] (gemm_row_table), else at b + p·ldb.
  const std::int64_t* b_rows = nullptr;
  std::int64_t n = 0;
  float beta = 0.0f;
  float* c = nullptr;
  std::int64_t ldc = 0;
  GemmEpilogue epilogue;

  void pack(std::int64_t p0, std::int64_t depth, std::int64_t j0, std::int64_t cols, std::int64_t width,
            float* out) const {
    if (windows) {
      pack_windows(*windows, p0, depth, j0, cols, width, out);
    } else {
      pack_matrix(transpose_b, b, ldb, p0, depth, j0, cols, width, out);
    }
  }
};

std::int64_t tile_width() { return isa() == Isa::avx512 ? 32 : 16; }

// C's rows of A's panels [panel0, panel1) and columns [col0, col1) for depth block `block`, with B's
// block packed at `packed_b` (panels of the columns from `packed_col0` on) or, with `direct`, read
// where it is (a plain B, not transposed): whole tiles straight from its rows, an edge tile packed
// (rows from a table: every tile in place, the caller leaving a tile's width readable past B's end).
void compute_block(const Problem& pr, std::int64_t block, std::int64_t panel0, std::int64_t panel1, std::int64_t col0,
                   std::int64_t col1, const float* packed_b, std::int64_t packed_col0, bool direct = false) {
  const std::int64_t width = tile_width();
  const std::int64_t m = pr.a->rows(), k = pr.a->depth(), mr = pr.a->panel_height();
  const std::int64_t pc = block * kDepthBlock;
  const std::int64_t kc = std::min(kDepthBlock, k - pc);
  const GemmEpilogue& e = pr.epilogue;
  const bool clamp = e.lo != -std::numeric_limits<float>::infinity() || e.hi != std::numeric_limits<float>::infinity();
  // Column tiles outer: one B panel (kc × NR) stays in L1 while A's panels stream from L2.
  for (std::int64_t col = col0; col < col1; col += width) {
    const std::int64_t cols = std::min(width, col1 - col);
    const float* panel_b = nullptr;
    std::int64_t b_stride = 0;
    thread_local std::vector<float> edge;
    if (!direct) {
      panel_b = packed_b + (col - packed_col0) * kc;
    } else if (pr.b_rows) {
      panel_b = pr.b + col;
    } else if (cols == width) {
      panel_b = pr.b + pc * pr.ldb + col;
      b_stride = pr.ldb;
    } else {
      edge.resize(static_cast<std::size_t>(kc * width));
      pack_matrix(false, pr.b, pr.ldb, pc, kc, col, cols, width, edge.data());
      panel_b = edge.data();
    }
    for (std::int64_t panel = panel0; panel < panel1; ++panel) {
      const std::int64_t row = panel * mr;
      const std::int64_t rows = std::min(mr, m - row);
      const float* a = pr.a->panel(block, panel);
      TileOps ops;
      ops.accumulate = block > 0;
      ops.beta = pr.beta;
      ops.last = pc + kc >= k;
      if (ops.last) {
        ops.row_bias = e.row_bias ? e.row_bias + row : nullptr;
        ops.col_bias = e.col_bias ? e.col_bias + col : nullptr;
        ops.residual = e.residual ? e.residual + row * e.ldr + col : nullptr;
        ops.ldr = e.ldr;
        ops.clamp = clamp;
        ops.lo = e.lo;
        ops.hi = e.hi;
      }
      float* out = pr.c + row * pr.ldc + col;
      const Kernel kernel = kernel_for(rows, pr.b_rows != nullptr, cols);
      ops.cols = static_cast<int>(cols);
      ops.ldb = b_stride;
      ops.a_stride = mr;
      ops.b_rows = pr.b_rows ? pr.b_rows + pc : nullptr;
      ops.stream = ops.last && e.bypass_cache;
      if (cols == width || isa() == Isa::avx512) {
        kernel(kc, a, panel_b, out, pr.ldc, ops);
      } else {
        edge_tile(kernel, width, kc, a, panel_b, out, pr.ldc, rows, cols, ops);
      }
    }
  }
  // Streaming stores are weakly ordered: visible to the threads that read C next only after a fence.
  if (e.bypass_cache && pc + kc >= k) _mm_sfence();
}

// One thread: C's tiles [first, last) (all of them by default), numbered column panel by column panel with
// A's row panels within each, so that a thread's share is a run of whole column panels with part of one at
// either end. B packed block by block (a block stays in L2 while A's panels pass over it); a column panel
// that two threads share is packed by both.
void run_serial(const Problem& pr, std::int64_t first = 0, std::int64_t last = -1) {
  const std::int64_t width = tile_width();
  const std::int64_t k = pr.a->depth(), panels = pr.a->panels();
  if (last < 0) last = (pr.n + width - 1) / width * panels;
  if (first >= last) return;
  const std::int64_t q0 = first / panels, q1 = (last - 1) / panels + 1;  // the column panels touched
  // A's panels [first, end) of column panel q in the share.
  const auto rows_of = [&](std::int64_t q) {
    return std::pair{q == q0 ? first % panels : 0, q == q1 - 1 ? (last - 1) % panels + 1 : panels};
  };
  const bool direct = !pr.windows && !pr.transpose_b && pr.a->rows() <= kDirectPanels * panel_rows();
  thread_local std::vector<float> buffer;
  if (!direct) buffer.resize(static_cast<std::size_t>(kDepthBlock * kColumnBlock));
  const std::int64_t per_block = kColumnBlock / width;
  for (std::int64_t g = q0; g < q1; g += per_block) {
    const std::int64_t g_end = std::min(q1, g + per_block);
    const std::int64_t jc = g * width, nc = std::min(pr.n, g_end * width) - jc;
    for (std::int64_t block = 0; block * kDepthBlock < k; ++block) {
      const std::int64_t pc = block * kDepthBlock;
      if (!direct) pr.pack(pc, std::min(kDepthBlock, k - pc), jc, nc, width, buffer.data());
      // Column panels with the same rows in one call: its column tiles run outer, each B panel in L1.
      for (std::int64_t q = g; q < g_end;) {
        const auto rows = rows_of(q);
        std::int64_t q_end = q + 1;
        while (q_end < g_end && rows_of(q_end) == rows) ++q_end;
        compute_block(pr, block, rows.first, rows.second, q * width, std::min(pr.n, q_end * width),
                      direct ? nullptr : buffer.data(), jc, direct);
        q = q_end;
      }
    }
  }
}

// C's rows of A's panels [panel0, panel1) and columns [col0, col1), B packed whole ahead in gemm_prepacked's
// layout; calling thread only.
void run_prepacked(const Problem& pr, const float* packed_b, std::int64_t panel0, std::int64_t panel1,
                   std::int64_t col0, std::int64_t col1) {
  const std::int64_t padded = packed_b_columns(pr.n);
  for (std::int64_t jc = col0; jc < col1; jc += kColumnBlock) {
    const std::int64_t end = std::min(col1, jc + kColumnBlock);
    for (std::int64_t pc = 0; pc < pr.a->depth(); pc += kDepthBlock)
      compute_block(pr, pc / kDepthBlock, panel0, panel1, jc, end, packed_b + pc * padded, 0);
  }
}

// The micro-kernel's cost of column panel q, in whole tiles: an AVX-512 edge tile of at most 16 columns
// runs the one-vector kernel, half the multiply-adds.
double tile_units(std::int64_t n, std::int64_t q) {
  const std::int64_t width = tile_width(), cols = std::min(width, n - q * width);
  return isa() == Isa::avx512 && cols <= 16 ? 0.5 : 1.0;
}

// The first tile (run_serial's numbering) of each of `threads` shares of C's tiles, and the end: shares of
// about equal cost, a tile costing its rows times its column panel's units. Equal counts of column panels
// split SqueezeNet's 13 × 13 layers (5.5 units in 6 panels) 3 + 2.5 and 14 × 14 ones (6.5 in 7) 4 + 2.5.
std::vector<std::int64_t> tile_shares(std::int64_t m, std::int64_t mr, std::int64_t n, int threads) {
  const std::int64_t width = tile_width();
  const std::int64_t panels = (m + mr - 1) / mr, col_panels = (n + width - 1) / width;
  double total = 0.0;
  for (std::int64_t q = 0; q < col_panels; ++q) total += tile_units(n, q) * static_cast<double>(m);
  std::vector<std::int64_t> first{0};
  double before = 0.0;  // the cost of the column panels before q
  for (std::int64_t q = 0; q < col_panels; ++q) {
    const double column = tile_units(n, q) * static_cast<double>(m);
    // Shares that end inside column panel q: at the row panel nearest their even part.
    while (static_cast<int>(first.size()) < threads &&
           total * static_cast<double>(first.size()) / threads < before + column) {
      const double rows = (total * static_cast<double>(first.size()) / threads - before) / tile_units(n, q);
      const auto p =
          std::min(panels, static_cast<std::int64_t>(std::llround(rows / static_cast<double>(mr))));
      first.push_back(std::max(first.back(), q * panels + p));
    }
    before += column;
  }
  while (static_cast<int>(first.size()) <= threads) first.push_back(col_panels * panels);
  return first;
}

// All threads. With at least two column panels per thread, C's tiles are shared out in runs of about equal
// cost (tile_shares), each thread packing and multiplying its own columns as run_serial does (no pass over
// the whole of B first, no second dispatch). With fewer (small images at batch 1), or weights too large for
// every thread to read all of them, B is packed whole first, in parallel, and C's tiles are shared out by
// panels of A's rows.
void run_parallel(const Problem& pr, int threads) {
  const std::int64_t width = tile_width(), mr = pr.a->panel_height();
  const std::int64_t m = pr.a->rows(), k = pr.a->depth(), panels = pr.a->panels();
  const std::int64_t col_panels = (pr.n + width - 1) / width;
  // Large weights are shared out by rows even with many columns: each thread then reads its part of A for
  // every column tile from its own L2 (SqueezeNet's 2 MB classifier over 13 × 13: 0.63 ms by tiles, 0.60 by
  // rows); the B packed whole first is the smaller operand there.
  constexpr std::int64_t kRowSplitMacs = std::int64_t{1} << 25, kRowSplitWeightBytes = std::int64_t{1} << 20;
  const bool large_a =
      m * pr.n * k >= kRowSplitMacs && m * k * std::int64_t{sizeof(float)} >= kRowSplitWeightBytes;
  if (col_panels >= 2 * threads && !large_a) {
    const std::vector<std::int64_t> shares = tile_shares(m, mr, pr.n, threads);
    parallel_for(threads, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t t = begin; t < end; ++t) run_serial(pr, shares[t], shares[t + 1]);
    });
    return;
  }
  const std::int64_t padded = col_panels * width;
  const std::int64_t blocks = (k + kDepthBlock - 1) / kDepthBlock;
  const std::int64_t col_blocks = (pr.n + kColumnBlock - 1) / kColumnBlock;
  thread_local std::vector<float> packed;
  packed.resize(static_cast<std::size_t>(k * padded));
  float* const base = packed.data();
  // Block b's panels start at b·kDepthBlock·padded; its column panel q at + q·width·kc.
  parallel_for(blocks * col_blocks, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t t = begin; t < end; ++t) {
      const std::int64_t block = t / col_blocks, jc = t % col_blocks * kColumnBlock;
      const std::int64_t pc = block * kDepthBlock, kc = std::min(kDepthBlock, k - pc);
      pr.pack(pc, kc, jc, std::min(kColumnBlock, pr.n - jc), width, base + pc * padded + jc * kc);
    }
  });
  parallel_for(panels,
               [&](std::int64_t begin, std::int64_t end) { run_prepacked(pr, base, begin, end, 0, pr.n); });
}

void run(const Problem& pr) {
  const std::int64_t m = pr.a->rows(), k = pr.a->depth();
  const int threads = in_parallel_region() ? 1 : num_threads();
  if (threads == 1 || m * pr.n * k < (1 << 17)) {
    run_serial(pr);
  } else {
    run_parallel(pr, threads);
  }
}

// k = 0: the product is empty, C = beta·C and the epilogue.
void empty_product(const Problem& pr, std::int64_t m) {
  const GemmEpilogue& e = pr.epilogue;
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < pr.n; ++j) {
      float& out = pr.c[i * pr.ldc + j];
      float v = pr.beta != 0.0f ? pr.beta * out : 0.0f;
      if (e.row_bias) v += e.row_bias[i];
      if (e.col_bias) v += e.col_bias[j];
      if (e.residual) v += e.residual[i * e.ldr + j];
      out = std::min(std::max(v, e.lo), e.hi);
    }
  }
}

// The fields every entry point sets; false when nothing is left to compute (C empty, or k = 0 and C
// already given its beta·C and epilogue).
bool start(Problem& pr, const PackedMatrix& a, std::int64_t n, float beta, float* c, std::int64_t ldc,
           const GemmEpilogue& epilogue) {
  pr.a = &a;
  pr.n = n;
  pr.beta = beta;
  pr.c = c;
  pr.ldc = ldc;
  pr.epilogue = epilogue;
  if (a.rows() <= 0 || n <= 0) return false;
  if (a.depth() == 0) {
    empty_product(pr, a.rows());
    return false;
  }
  return true;
}

}  // namespace

bool fast_gemm_available() { return isa() != Isa::none; }

const char* fast_gemm_isa() {
  switch (isa()) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::none: break;
  }
  return "";
}

bool fast_gemm_uses_avx512() { return isa() == Isa::avx512; }

PackedMatrix::PackedMatrix(const float* a, std::int64_t lda, bool transpose, std::int64_t m, std::int64_t k,
                           float alpha)
    : m_(m), k_(k), mr_(panel_rows_for(m)), panels_((m + mr_ - 1) / mr_) {
  data_.assign(static_cast<std::size_t>(panels_ * mr_ * k), 0.0f);
  for (std::int64_t block = 0; block * kDepthBlock < k; ++block) {
    const std::int64_t pc = block * kDepthBlock;
    const std::int64_t kc = std::min(kDepthBlock, k - pc);
    for (std::int64_t panel = 0; panel < panels_; ++panel) {
      float* out = data_.data() + pc * panels_ * mr_ + panel * mr_ * kc;
      const std::int64_t rows = std::min(mr_, m - panel * mr_);
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t i = panel * mr_ + r;
        for (std::int64_t p = 0; p < kc; ++p) {
          const float v = transpose ? a[(pc + p) * lda + i] : a[i * lda + pc + p];
          out[p * mr_ + r] = alpha * v;
        }
      }
    }
  }
}

PackedMatrix PackedMatrix::zeros(std::int64_t m, std::int64_t k) {
  PackedMatrix a;
  a.m_ = m;
  a.k_ = k;
  a.mr_ = panel_rows_for(m);
  a.panels_ = (m + a.mr_ - 1) / a.mr_;
  a.data_.assign(static_cast<std::size_t>(a.panels_ * a.mr_ * k), 0.0f);
  return a;
}

const float* PackedMatrix::panel(std::int64_t block, std::int64_t panel) const {
  const std::int64_t pc = block * kDepthBlock;
  const std::int64_t kc = std::min(kDepthBlock, k_ - pc);
  return data_.data() + pc * panels_ * mr_ + panel * mr_ * kc;
}

void gemm_packed(const PackedMatrix& a, bool transpose_b, std::int64_t n, const float* b, std::int64_t ldb,
                 float beta, float* c, std::int64_t ldc, const GemmEpilogue& epilogue) {
  Problem pr;
  pr.transpose_b = transpose_b;
  pr.b = b;
  pr.ldb = ldb;
  if (start(pr, a, n, beta, c, ldc, epilogue)) run(pr);
}

void gemm_windows(const PackedMatrix& a, const ConvWindows& windows, float* c, std::int64_t ldc,
                  const GemmEpilogue& epilogue, float beta) {
  Problem pr;
  pr.windows = &windows;
  if (start(pr, a, windows.out_height * windows.out_width, beta, c, ldc, epilogue)) run(pr);
}

void gemm_row_table(const PackedMatrix& a, const float* b, const std::int64_t* b_rows, std::int64_t n,
                    float beta, float* c, std::int64_t ldc, const GemmEpilogue& epilogue) {
  Problem pr;
  pr.b = b;
  pr.b_rows = b_rows;
  if (!start(pr, a, n, beta, c, ldc, epilogue)) return;
  const std::int64_t panels = a.panels();
  for (std::int64_t block = 0; block * kDepthBlock < a.depth(); ++block)
    compute_block(pr, block, 0, panels, 0, n, nullptr, 0, true);
}

std::int64_t gemm_depth_block() { return kDepthBlock; }
std::int64_t gemm_panel_width() { return tile_width(); }

std::vector<float> pack_b(const float* b, std::int64_t ldb, bool transpose, std::int64_t k, std::int64_t n) {
  std::vector<float> packed(static_cast<std::size_t>(packed_b_size(k, n)));
  const std::int64_t padded = packed_b_columns(n);
  for (std::int64_t pc = 0; pc < k; pc += kDepthBlock)
    pack_matrix(transpose, b, ldb, pc, std::min(kDepthBlock, k - pc), 0, n, tile_width(),
                packed.data() + pc * padded);
  return packed;
}

void gemm_prepacked(const PackedMatrix& a, const float* packed_b, std::int64_t n, float* c, std::int64_t ldc,
                    const GemmEpilogue& epilogue, std::int64_t col0, std::int64_t col1) {
  Problem pr;
  if (!start(pr, a, n, 0.0f, c, ldc, epilogue)) return;
  run_prepacked(pr, packed_b, 0, a.panels(), col0, col1 < 0 ? n : col1);
}

void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
          const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
          std::int64_t ldc, const GemmEpilogue& epilogue) {
  if (m <= 0 || n <= 0) return;
  const PackedMatrix packed(a, lda, transpose_a, m, k, alpha);
  gemm_packed(packed, transpose_b, n, b, ldb, beta, c, ldc, epilogue);
}

}  // namespace espresso::cpu
