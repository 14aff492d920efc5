// Sparse × dense products for fully connected layers whose weights are pruned and weight-shared (Deep
// Compression's): the weight matrix kept as sparse rows of codebook indices, each value looked up in a
// codebook of at most 256 floats as it is used. The CPU InnerProduct kernel runs on it where
// sparse_product_wins() says it beats sgemm; tests and bench/sparse_inner_product.cpp use it directly.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace espresso::cpu {

std::int64_t count_nonzeros(const float* values, std::int64_t count);

// The planner's cost model: whether sparse × dense with `nonzeros` nonzero weights is faster than sgemm
// over the dense outputs × inner matrix for `rows` rows (constants measured by
// bench/sparse_inner_product.cpp, docs/compression.md).
bool sparse_product_wins(std::int64_t nonzeros, std::int64_t rows, std::int64_t outputs, std::int64_t inner);

class SparseCodebookMatrix {
 public:
  // W (outputs × inner; inner × outputs when `transposed`) in sparse codebook form, or nullopt where its
  // nonzero values have more than 256 distinct bit patterns. Zeros (either sign) are left out.
  static std::optional<SparseCodebookMatrix> from_dense(const float* w, bool transposed, std::int64_t outputs,
                                                        std::int64_t inner);

  // y (rows × outputs) = x (rows × inner) · Wᵀ + bias (bias may be null). `scratch` holds x transposed for
  // batches of more than a few rows. Threaded with parallel_for.
  void multiply(const float* x, const float* bias, float* y, std::int64_t rows,
                std::vector<float>& scratch) const;

  std::int64_t nonzeros() const { return static_cast<std::int64_t>(code_.size()); }
  std::int64_t codebook_size() const { return static_cast<std::int64_t>(codebook_.size()); }
  // Bytes of the sparse form: codebook, row starts, columns and codebook indices.
  std::int64_t bytes() const;

 private:
  template <class Column>
  void multiply_with(const std::vector<Column>& column, const float* x, const float* bias, float* y,
                     std::int64_t rows, std::vector<float>& scratch) const;

  std::int64_t outputs_ = 0, inner_ = 0;
  std::vector<float> codebook_;
  // Output n's nonzeros are entries row_start_[n] .. row_start_[n+1]-1: a column (input) and a codebook
  // index.
  std::vector<std::uint32_t> row_start_;
  // Columns in 16 bits where the input has at most 65,536 values (3 bytes a nonzero), else in 32.
  std::vector<std::uint16_t> narrow_column_;
  std::vector<std::uint32_t> wide_column_;
  std::vector<std::uint8_t> code_;
};

}  // namespace espresso::cpu
