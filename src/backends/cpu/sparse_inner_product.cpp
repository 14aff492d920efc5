// Sparse × dense with codebook lookups (sparse_inner_product.h).
#include "backends/cpu/sparse_inner_product.h"

#include <algorithm>
#include <bit>
#include <unordered_map>

#include "core/parallel.h"

namespace espresso::cpu {
namespace {

// Up to kDirectRows rows, each output's nonzeros gather from x's rows; beyond, x is transposed first so
// that each nonzero scales a contiguous run of rows, kRowBlock at a time, kept in registers.
constexpr std::int64_t kDirectRows = 4;
constexpr std::int64_t kRowBlock = 16;
// Pruned rows hold very different numbers of nonzeros: several chunks a thread, claimed as threads come
// free (parallel_for).
constexpr int kUnevenRowsChunks = 4;

// Time per multiply-add relative to sgemm's (bench/sparse_inner_product.cpp on this project's AVX-512
// development machine, one thread): sgemm streams every weight, the sparse product only the nonzeros but
// with a gather (or a strided column) and a codebook lookup each.
constexpr double kSparseCostFewRows = 2.0;
constexpr double kSparseCostManyRows = 8.0;

}  // namespace

std::int64_t count_nonzeros(const float* values, std::int64_t count) {
  std::int64_t nonzeros = 0;
  for (std::int64_t i = 0; i < count; ++i) nonzeros += values[i] != 0.0f ? 1 : 0;
  return nonzeros;
}

bool sparse_product_wins(std::int64_t nonzeros, std::int64_t rows, std::int64_t outputs, std::int64_t inner) {
  const double relative_cost = rows <= kDirectRows ? kSparseCostFewRows : kSparseCostManyRows;
  return static_cast<double>(nonzeros) * relative_cost <
         static_cast<double>(outputs) * static_cast<double>(inner);
}

std::optional<SparseCodebookMatrix> SparseCodebookMatrix::from_dense(const float* w, bool transposed,
                                                                     std::int64_t outputs,
                                                                     std::int64_t inner) {
  const std::int64_t count = outputs * inner;
  if (count_nonzeros(w, count) >= (std::int64_t{1} << 32)) return std::nullopt;
  SparseCodebookMatrix m;
  m.outputs_ = outputs;
  m.inner_ = inner;
  std::unordered_map<std::uint32_t, std::uint8_t> index_of;
  for (std::int64_t i = 0; i < count; ++i) {
    if (w[i] == 0.0f) continue;
    const auto bits = std::bit_cast<std::uint32_t>(w[i]);
    if (index_of.count(bits)) continue;
    if (m.codebook_.size() == 256) return std::nullopt;
    index_of.emplace(bits, static_cast<std::uint8_t>(m.codebook_.size()));
    m.codebook_.push_back(w[i]);
  }
  const bool narrow = inner <= 65536;
  m.row_start_.reserve(static_cast<std::size_t>(outputs) + 1);
  m.row_start_.push_back(0);
  for (std::int64_t n = 0; n < outputs; ++n) {
    for (std::int64_t k = 0; k < inner; ++k) {
      const float v = w[transposed ? k * outputs + n : n * inner + k];
      if (v == 0.0f) continue;
      if (narrow)
        m.narrow_column_.push_back(static_cast<std::uint16_t>(k));
      else
        m.wide_column_.push_back(static_cast<std::uint32_t>(k));
      m.code_.push_back(index_of.at(std::bit_cast<std::uint32_t>(v)));
    }
    m.row_start_.push_back(static_cast<std::uint32_t>(m.code_.size()));
  }
  return m;
}

std::int64_t SparseCodebookMatrix::bytes() const {
  return static_cast<std::int64_t>(codebook_.size() * sizeof(float) +
                                   row_start_.size() * sizeof(std::uint32_t) + narrow_column_.size() * 2 +
                                   wide_column_.size() * 4 + code_.size());
}

void SparseCodebookMatrix::multiply(const float* x, const float* bias, float* y, std::int64_t rows,
                                    std::vector<float>& scratch) const {
  if (wide_column_.empty())
    multiply_with(narrow_column_, x, bias, y, rows, scratch);
  else
    multiply_with(wide_column_, x, bias, y, rows, scratch);
}

template <class Column>
void SparseCodebookMatrix::multiply_with(const std::vector<Column>& column, const float* x, const float* bias,
                                         float* y, std::int64_t rows, std::vector<float>& scratch) const {
  const float* codebook = codebook_.data();
  const std::uint8_t* code = code_.data();
  const Column* col = column.data();
  const std::int64_t outputs = outputs_, inner = inner_;
  // About 32k multiply-adds per task.
  const std::int64_t per_output = rows * (nonzeros() / std::max<std::int64_t>(1, outputs) + 1);
  const std::int64_t grain = std::max<std::int64_t>(1, (std::int64_t{1} << 15) / per_output);
  if (rows <= kDirectRows) {
    parallel_for(
        outputs,
        [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t n = begin; n < end; ++n) {
            const std::uint32_t first = row_start_[static_cast<std::size_t>(n)];
            const std::uint32_t last = row_start_[static_cast<std::size_t>(n) + 1];
            for (std::int64_t r = 0; r < rows; ++r) {
              const float* row = x + r * inner;
              float sum = 0.0f;
              for (std::uint32_t e = first; e < last; ++e) sum += codebook[code[e]] * row[col[e]];
              y[r * outputs + n] = sum + (bias ? bias[n] : 0.0f);
            }
          }
        },
        grain, kUnevenRowsChunks);
    return;
  }
  scratch.resize(static_cast<std::size_t>(rows * inner));
  float* xt = scratch.data();
  parallel_for(
      inner,
      [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t r = 0; r < rows; ++r) {
          for (std::int64_t k = begin; k < end; ++k) xt[k * rows + r] = x[r * inner + k];
        }
      },
      std::max<std::int64_t>(1, 4096 / rows));
  parallel_for(
      outputs,
      [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t n = begin; n < end; ++n) {
          const std::uint32_t first = row_start_[static_cast<std::size_t>(n)];
          const std::uint32_t last = row_start_[static_cast<std::size_t>(n) + 1];
          const float b = bias ? bias[n] : 0.0f;
          for (std::int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
            float acc[kRowBlock] = {};
            const float* base = xt + r0;
            if (r0 + kRowBlock <= rows) {
              for (std::uint32_t e = first; e < last; ++e) {
                const float v = codebook[code[e]];
                const float* column_values = base + static_cast<std::int64_t>(col[e]) * rows;
                for (std::int64_t i = 0; i < kRowBlock; ++i) acc[i] += v * column_values[i];
              }
            } else {
              const std::int64_t tail = rows - r0;
              for (std::uint32_t e = first; e < last; ++e) {
                const float v = codebook[code[e]];
                const float* column_values = base + static_cast<std::int64_t>(col[e]) * rows;
                for (std::int64_t i = 0; i < tail; ++i) acc[i] += v * column_values[i];
              }
            }
            const std::int64_t block = std::min(kRowBlock, rows - r0);
            for (std::int64_t i = 0; i < block; ++i) y[(r0 + i) * outputs + n] = acc[i] + b;
          }
        }
      },
      grain, kUnevenRowsChunks);
}

}  // namespace espresso::cpu
