// espresso's own single-precision GEMM for x86-64 with AVX2+FMA (and AVX-512F where the processor
// has it), chosen at run time: register-tiled micro-kernels (6 rows × 16 or 32 columns) over packed
// panels, blocked for the caches, threaded on the pool, with the bias, a residual and a clamp
// (ReLU, ReLU6, clip) applied as the tiles are written. The left matrix (a layer's weights) can be
// packed once (PackedMatrix) and reused across calls. Without AVX2 the callers keep OpenBLAS.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace espresso::cpu {

// True when the processor runs the fast GEMM (AVX2 and FMA) and ESPRESSO_GEMM is not "openblas".
bool fast_gemm_available();
// The instruction set the fast GEMM uses here: "avx512", "avx2", or "" when unavailable.
const char* fast_gemm_isa();
// True when that is AVX-512: the other CPU kernels follow the GEMM's choice, so that ESPRESSO_GEMM=avx2
// reaches their AVX2 paths too.
bool fast_gemm_uses_avx512();

// What is done to each element of C as it is written, after the product (and beta·C) is summed:
// + row_bias[row] + col_bias[col] + residual[row·ldr + col], then clamped to [lo, hi].
struct GemmEpilogue {
  const float* row_bias = nullptr;
  const float* col_bias = nullptr;
  const float* residual = nullptr;
  std::int64_t ldr = 0;
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
  // C's finished tiles written with streaming stores, past the caches: for a layer whose output is far
  // larger than the caches, so that writing it does not first read every line of it from memory.
  bool bypass_cache = false;
};

// The left operand A (m × k) of C = A · B, scaled by alpha, cut into k-blocks and panels of up to 6 (AVX2)
// or 12 (AVX-512) rows, in the order the micro-kernel reads them. Packed once, read by any number of threads.
class PackedMatrix {
 public:
  PackedMatrix() = default;
  // A row-major (element (i, p) at a[i·lda + p]) or, with transpose, column-major (a[p·lda + i]).
  PackedMatrix(const float* a, std::int64_t lda, bool transpose, std::int64_t m, std::int64_t k,
               float alpha = 1.0f);
  std::int64_t rows() const { return m_; }
  std::int64_t depth() const { return k_; }
  bool empty() const { return data_.empty(); }
  // Panel `panel` (MR rows) of k-block `block`: depth(block) × MR floats, k-major.
  const float* panel(std::int64_t block, std::int64_t panel) const;
  // Zeros of m × k, for a caller that writes the panels itself (mutable_panel): rows past m stay zero.
  static PackedMatrix zeros(std::int64_t m, std::int64_t k);
  float* mutable_panel(std::int64_t block, std::int64_t panel) {
    return const_cast<float*>(static_cast<const PackedMatrix*>(this)->panel(block, panel));
  }
  std::int64_t panel_height() const { return mr_; }
  std::int64_t panels() const { return panels_; }

 private:
  std::int64_t m_ = 0, k_ = 0, mr_ = 0, panels_ = 0;
  std::vector<float> data_;
};

// C (m × n, row-major, leading dimension ldc) = A · B + beta · C, then the epilogue; B is k × n
// (b[p·ldb + j]) or, with transpose_b, n × k (b[j·ldb + p]). Runs on the pool unless called inside a
// parallel region. Requires fast_gemm_available().
void gemm_packed(const PackedMatrix& a, bool transpose_b, std::int64_t n, const float* b, std::int64_t ldb,
                 float beta, float* c, std::int64_t ldc, const GemmEpilogue& epilogue = {});

// B read straight from a 2-D convolution's windows over one image (group): row (channel, ky, kx),
// column (oy, ox) holds image[channel][oy·stride_h − pad_h + ky·dilation_h][ox·stride_w − pad_w +
// kx·dilation_w], 0 outside — the matrix im2col writes, never stored whole.
struct ConvWindows {
  const float* image = nullptr;
  std::int64_t height = 0, width = 0, out_height = 0, out_width = 0;
  // Floats from one channel's plane to the next: height·width when 0. A band of an image's rows (its
  // first row moved, its height cut) keeps the image's plane size here.
  std::int64_t plane_stride = 0;
  std::int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  std::int64_t dilation_h = 1, dilation_w = 1;
  std::int64_t plane() const { return plane_stride > 0 ? plane_stride : height * width; }
};
// C (m × out_height·out_width) = A · windows + beta · C, then the epilogue.
void gemm_windows(const PackedMatrix& a, const ConvWindows& windows, float* c, std::int64_t ldc,
                  const GemmEpilogue& epilogue = {}, float beta = 0.0f);

// B packed ahead by the caller in the layout the GEMM packs it into (Winograd writes its transformed
// tiles there directly): for each depth block of gemm_depth_block() rows, B's columns in panels of
// gemm_panel_width(), each panel depth-major (element (p, j) at packed_b_offset(k, n, p, j)), columns
// past n padded to a whole panel. packed_b_size(k, n) floats in all.
std::int64_t gemm_depth_block();
std::int64_t gemm_panel_width();
inline std::int64_t packed_b_columns(std::int64_t n) {
  const std::int64_t w = gemm_panel_width();
  return (n + w - 1) / w * w;
}
inline std::int64_t packed_b_size(std::int64_t k, std::int64_t n) { return k * packed_b_columns(n); }
inline std::int64_t packed_b_offset(std::int64_t k, std::int64_t n, std::int64_t p, std::int64_t j) {
  const std::int64_t kb = gemm_depth_block(), w = gemm_panel_width();
  const std::int64_t pc = p / kb * kb, kc = std::min(kb, k - pc);
  return pc * packed_b_columns(n) + j / w * w * kc + (p - pc) * w + j % w;
}
// B (k × n, element (p, j) at b[p·ldb + j] or, with transpose, b[j·ldb + p]) packed as above, once (a
// layer's weights as the right operand).
std::vector<float> pack_b(const float* b, std::int64_t ldb, bool transpose, std::int64_t k, std::int64_t n);
// C (m × n) = A · B, then the epilogue, B packed as above, for C's columns [col0, col1) (all by default;
// col0 a multiple of gemm_panel_width()); runs on the calling thread only.
void gemm_prepacked(const PackedMatrix& a, const float* packed_b, std::int64_t n, float* c, std::int64_t ldc,
                    const GemmEpilogue& epilogue = {}, std::int64_t col0 = 0, std::int64_t col1 = -1);

// C (m × n) = A · B + beta · C, then the epilogue, with B's row p read in place at b + b_rows[p] (a direct
// convolution's window taps over a padded image); every row must stay readable for gemm_panel_width() − 1
// floats past column n − 1 (whole tiles are loaded, the columns past n never stored). Calling thread only.
void gemm_row_table(const PackedMatrix& a, const float* b, const std::int64_t* b_rows, std::int64_t n,
                    float beta, float* c, std::int64_t ldc, const GemmEpilogue& epilogue = {});

// Same with A packed for this call only (alpha folds into it).
void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
          const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
          std::int64_t ldc, const GemmEpilogue& epilogue = {});

}  // namespace espresso::cpu
