#include "backends/cpu/gemm_int8.h"

#include <immintrin.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/parallel.h"

namespace espresso::cpu {
namespace {

using Path = Int8Path;

bool has_avx2() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") != 0;
#else
  return false;
#endif
}

bool has_vnni() {
#if defined(__x86_64__)
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

Path detect() {
  const char* forced = std::getenv("ESPRESSO_INT8");
  const std::string want = forced ? forced : "";
  if (want == "plain") return Path::plain;
  if (want == "avx2") return has_avx2() ? Path::avx2 : Path::plain;
  if (has_vnni()) return Path::vnni;
  return has_avx2() ? Path::avx2 : Path::plain;
}

Path path() {
  static const Path p = detect();
  return p;
}

// One 8 × 32 tile over `groups` 4-deep groups; c has leading dimension ldc.
void tile_plain(std::int64_t groups, const std::int8_t* a, const std::uint8_t* b, std::int32_t* c, std::int64_t ldc) {
  std::int32_t acc[kInt8Rows][kInt8Columns] = {};
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::int8_t* ag = a + g * kInt8Rows * 4;
    const std::uint8_t* bg = b + g * kInt8Columns * 4;
    for (std::int64_t r = 0; r < kInt8Rows; ++r) {
      for (std::int64_t j = 0; j < kInt8Columns; ++j) {
        std::int32_t sum = 0;
        for (int t = 0; t < 4; ++t) sum += static_cast<std::int32_t>(ag[r * 4 + t]) * bg[j * 4 + t];
        acc[r][j] += sum;
      }
    }
  }
  for (std::int64_t r = 0; r < kInt8Rows; ++r) std::memcpy(c + r * ldc, acc[r], sizeof(acc[r]));
}

#if defined(__x86_64__)
// How far ahead (bytes) tile_vnni prefetches A: a panel's first tile reads it from memory at batch 1
// (as the float GEMM's kPrefetchAhead).
constexpr std::int64_t kPrefetchAhead = 1024;

// acc += the four-byte dot products of b (unsigned) and w (signed) per lane. Written out because GCC 12
// copies every accumulator of tile_vnni's loop to another register and back around the intrinsic
// (two moves per vpdpbusd, which halved the kernel's speed); the instruction updates acc in place.
[[gnu::always_inline]] inline __attribute__((target("avx512f,avx512vnni"))) void dot_accumulate(__m512i& acc,
                                                                                             __m512i b, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(b), "v"(w));
}

// One row of A's group (four weights, broadcast) against the tile's 32 columns.
[[gnu::always_inline]] inline __attribute__((target("avx512f,avx512vnni"))) void row_step(
    __m512i& left, __m512i& right, __m512i b0, __m512i b1, const std::int8_t* weights) {
  std::int32_t four;
  std::memcpy(&four, weights, 4);
  const __m512i w = _mm512_set1_epi32(four);
  dot_accumulate(left, b0, w);
  dot_accumulate(right, b1, w);
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) void tile_vnni(std::int64_t groups, const std::int8_t* a,
                                                                      const std::uint8_t* b, std::int32_t* c,
                                                                      std::int64_t ldc) {
  // Sixteen accumulators as separate variables (in an array GCC keeps them in memory around the asm).
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  __m512i d0 = c0, d1 = c0, d2 = c0, d3 = c0, d4 = c0, d5 = c0, d6 = c0, d7 = c0;
  for (std::int64_t g = 0; g < groups; ++g) {
    const __m512i b0 = _mm512_loadu_si512(b + g * 128);
    const __m512i b1 = _mm512_loadu_si512(b + g * 128 + 64);
    const std::int8_t* ag = a + g * kInt8Rows * 4;
    _mm_prefetch(reinterpret_cast<const char*>(ag + kPrefetchAhead), _MM_HINT_T0);
    row_step(c0, d0, b0, b1, ag + 0);
    row_step(c1, d1, b0, b1, ag + 4);
    row_step(c2, d2, b0, b1, ag + 8);
    row_step(c3, d3, b0, b1, ag + 12);
    row_step(c4, d4, b0, b1, ag + 16);
    row_step(c5, d5, b0, b1, ag + 20);
    row_step(c6, d6, b0, b1, ag + 24);
    row_step(c7, d7, b0, b1, ag + 28);
  }
  const __m512i left[kInt8Rows] = {c0, c1, c2, c3, c4, c5, c6, c7}, right[kInt8Rows] = {d0, d1, d2, d3, d4, d5, d6, d7};
  for (std::int64_t r = 0; r < kInt8Rows; ++r) {
    _mm512_storeu_si512(c + r * ldc, left[r]);
    _mm512_storeu_si512(c + r * ldc + 16, right[r]);
  }
}

// 4 rows × 8 columns; B's bytes and A's widened to 16 bits so vpmaddwd sums two products exactly.
__attribute__((target("avx2"))) void quarter_avx2(std::int64_t groups, const std::int8_t* a, const std::uint8_t* b,
                                                  std::int32_t* c, std::int64_t ldc) {
  __m256i lo[4], hi[4];
  for (int r = 0; r < 4; ++r) lo[r] = hi[r] = _mm256_setzero_si256();
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::uint8_t* bg = b + g * 128;
    const __m256i b_lo = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bg)));
    const __m256i b_hi = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bg + 16)));
    const std::int8_t* ag = a + g * kInt8Rows * 4;
    for (int r = 0; r < 4; ++r) {
      std::int32_t four;
      std::memcpy(&four, ag + r * 4, 4);
      const __m256i w = _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(four)));
      lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(b_lo, w));
      hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(b_hi, w));
    }
  }
  for (int r = 0; r < 4; ++r) {
    // Lanes hold (column, pair) sums: add the pairs and put the columns back in order.
    const __m256i sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo[r], hi[r]), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * ldc), sums);
  }
}

void tile_avx2(std::int64_t groups, const std::int8_t* a, const std::uint8_t* b, std::int32_t* c, std::int64_t ldc) {
  // The 8 × 32 tile as 2 × 4 quarters; each reads its 4 rows and 8 columns out of the packed groups.
  // A's panel interleaves 8 rows per group, so a quarter starts 4 rows (16 bytes) in; B's 8 columns
  // start 32 bytes into each group's 128. quarter_avx2 keeps the 32- and 128-byte group strides.
  for (int rows = 0; rows < 2; ++rows) {
    for (int cols = 0; cols < 4; ++cols) quarter_avx2(groups, a + rows * 16, b + cols * 32, c + rows * 4 * ldc + cols * 8, ldc);
  }
}
#endif

}  // namespace

bool int8_path_available(Int8Path p) {
  switch (p) {
    case Path::vnni: return has_vnni();
    case Path::avx2: return has_avx2();
    case Path::plain:
    case Path::automatic: break;
  }
  return true;
}

const char* int8_gemm_isa() {
  switch (path()) {
    case Path::vnni: return "vnni";
    case Path::avx2: return "avx2";
    case Path::plain:
    case Path::automatic: break;
  }
  return "plain";
}

PackedInt8Matrix::PackedInt8Matrix(const std::int8_t* a, std::int64_t lda, std::int64_t m, std::int64_t k)
    : m_(m), k_(k) {
  const std::int64_t groups = int8_depth_groups(k);
  data_.assign(static_cast<std::size_t>(panels() * groups * kInt8Rows * 4), 0);
  row_sums_.assign(static_cast<std::size_t>(m), 0);
  for (std::int64_t i = 0; i < m; ++i) {
    std::int8_t* panel = data_.data() + (i / kInt8Rows) * groups * kInt8Rows * 4;
    for (std::int64_t p = 0; p < k; ++p) {
      const std::int8_t v = a[i * lda + p];
      panel[(p / 4) * kInt8Rows * 4 + (i % kInt8Rows) * 4 + p % 4] = v;
      row_sums_[static_cast<std::size_t>(i)] += v;
    }
  }
}

void gemm_u8s8(const PackedInt8Matrix& a, const std::uint8_t* b, std::int64_t n, const Int8TileSink& sink,
               Int8Path chosen) {
  const std::int64_t groups = int8_depth_groups(a.depth());
  const std::int64_t blocks = (n + kInt8Columns - 1) / kInt8Columns, panels = a.panels();
  const Path p = chosen == Path::automatic ? path() : chosen;
  // Consecutive tiles share the larger operand's slice, so each thread reads it from memory once and
  // the smaller one (which stays in its cache) many times: A's panels first where A is the larger
  // (deep layers on small images), B's blocks first otherwise.
  const bool panels_first = panels * kInt8Rows > blocks * kInt8Columns;
  auto run = [&](std::int64_t begin, std::int64_t end) {
    alignas(64) std::int32_t tile[kInt8Rows * kInt8Columns];
    for (std::int64_t t = begin; t < end; ++t) {
      const std::int64_t block = panels_first ? t % blocks : t / panels;
      const std::int64_t panel = panels_first ? t / blocks : t % panels;
      const std::uint8_t* bb = b + block * groups * kInt8Columns * 4;
#if defined(__x86_64__)
      if (p == Path::vnni) {
        tile_vnni(groups, a.panel(panel), bb, tile, kInt8Columns);
      } else if (p == Path::avx2) {
        tile_avx2(groups, a.panel(panel), bb, tile, kInt8Columns);
      } else
#endif
      {
        tile_plain(groups, a.panel(panel), bb, tile, kInt8Columns);
      }
      sink(panel * kInt8Rows, block * kInt8Columns, tile);
    }
  };
  const std::int64_t tiles = blocks * panels;
  if (tiles == 1 || in_parallel_region()) {
    run(0, tiles);
  } else {
    parallel_for(tiles, run);
  }
}

}  // namespace espresso::cpu
