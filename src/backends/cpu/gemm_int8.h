// Integer GEMM for quantized layers: C (int32) = A (int8 weights) · B (uint8 activations), summed
// exactly. Three paths with the same packed layouts, chosen at run time: AVX-512 VNNI (vpdpbusd, four
// u8×s8 products a lane per instruction), AVX2 (operands widened to 16 bits, vpmaddwd, so no
// intermediate saturates), and a plain loop, which is also the reference the others are tested against.
// ESPRESSO_INT8=vnni|avx2|plain forces a path (for tests and benchmarks).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace espresso::cpu {

enum class Int8Path { automatic, plain, avx2, vnni };
// "vnni", "avx2" or "plain": the path gemm_u8s8 takes here.
const char* int8_gemm_isa();
// Whether this processor can run `path` (tests run each one that it can).
bool int8_path_available(Int8Path path);

inline constexpr std::int64_t kInt8Rows = 8;     // rows of an A panel
inline constexpr std::int64_t kInt8Columns = 32;  // columns of a B block
inline std::int64_t int8_depth_groups(std::int64_t k) { return (k + 3) / 4; }

// A (m × k, row-major int8) cut into 8-row panels of 4-deep groups: panel p, group g, row r holds
// a[p·8 + r][4g .. 4g+3] (zeros past the edges). Also keeps each row's sum, which the caller needs to
// remove the activations' zero point: Σ (b − z)·a = Σ b·a − z·Σ a.
class PackedInt8Matrix {
 public:
  PackedInt8Matrix() = default;
  PackedInt8Matrix(const std::int8_t* a, std::int64_t lda, std::int64_t m, std::int64_t k);
  std::int64_t rows() const { return m_; }
  std::int64_t depth() const { return k_; }
  std::int64_t panels() const { return (m_ + kInt8Rows - 1) / kInt8Rows; }
  const std::int8_t* panel(std::int64_t p) const { return data_.data() + p * int8_depth_groups(k_) * kInt8Rows * 4; }
  const std::vector<std::int32_t>& row_sums() const { return row_sums_; }

 private:
  std::int64_t m_ = 0, k_ = 0;
  std::vector<std::int8_t> data_;
  std::vector<std::int32_t> row_sums_;
};

// B (k × n) packed into 32-column blocks of 4-deep groups: block j, group g, column c holds
// b[4g .. 4g+3][32j + c]. Callers fill it with pack_b_index (any value past k or n is harmless).
inline std::int64_t int8_b_bytes(std::int64_t k, std::int64_t n) {
  return ((n + kInt8Columns - 1) / kInt8Columns) * int8_depth_groups(k) * kInt8Columns * 4;
}
inline std::int64_t int8_b_index(std::int64_t k_groups, std::int64_t p, std::int64_t j) {
  return ((j / kInt8Columns) * k_groups + p / 4) * kInt8Columns * 4 + (j % kInt8Columns) * 4 + p % 4;
}

// The product A · B over whole tiles, handed over one 8 × 32 tile at a time while it is in L1:
// sink(row, column, tile) gets the sums of rows row .. row+7 and columns column .. column+31 (tile
// row-major, 32 a row); rows and columns past m and n hold garbage. Threads over tiles unless called
// inside a parallel region, so the sink may run on any thread, once per tile.
using Int8TileSink = std::function<void(std::int64_t row, std::int64_t column, const std::int32_t* tile)>;
void gemm_u8s8(const PackedInt8Matrix& a, const std::uint8_t* b, std::int64_t n, const Int8TileSink& sink,
               Int8Path path = Int8Path::automatic);

}  // namespace espresso::cpu
