// Max pooling of one plane's output rows, shared by the Pooling kernel (whole planes) and by a
// convolution that pools its own output as it makes it (bands of rows, so its full output never goes
// through memory: SqueezeNet's and ResNet's first convolution + ReLU + 3x3/2 max pooling).
#pragma once

#include <cstdint>
#include <vector>

#include "layers/pooling.h"

namespace espresso::cpu {

// Separable: each output row's window rows are reduced into a line inside -infinity borders, then
// every output's column window over that line (explicit AVX-512 kernels for the rows and for column
// strides 1 and 2, the compiler's loops elsewhere). Windows are PoolGeometry::span's, clipped to the
// image; 1-D pooling is 2-D over a height of 1.
class MaxPoolRows {
 public:
  explicit MaxPoolRows(const PoolGeometry& g);
  std::int64_t out_height() const { return static_cast<std::int64_t>(rows_.size()); }
  std::int64_t out_width() const { return out_width_; }
  // Input rows [first_row(o), end_row(o)) make output row o (an empty range in padding).
  std::int64_t first_row(std::int64_t o) const { return rows_[static_cast<std::size_t>(o)].begin; }
  std::int64_t end_row(std::int64_t o) const { return rows_[static_cast<std::size_t>(o)].end; }
  // Floats of the scratch line run() takes.
  std::int64_t line_size() const { return line_size_; }
  // Output rows [begin, end) of a plane into `out` (row by row, out_width() apart), reading input row h
  // at rows + (h − first)·(the input's width): the caller holds every row those outputs' windows read.
  void run(const float* rows, std::int64_t first, std::int64_t begin, std::int64_t end, float* out,
           float* line) const;

  // Chosen for the processor's instruction set: the window rows' max into the line, and each output's
  // max over its columns.
  struct Kernels {
    void (*rows)(const float* top, std::int64_t count, std::int64_t width, float* acc);
    void (*columns)(const float* line, std::int64_t kernel, std::int64_t stride, std::int64_t outputs,
                    float* out);
  };

 private:
  struct Window {
    std::int64_t begin, end;
  };
  std::vector<Window> rows_;
  std::int64_t in_width_ = 1, out_width_ = 1, kernel_w_ = 1, stride_w_ = 1, pad_w_ = 0, line_size_ = 1;
  Kernels kernels_{};
};

}  // namespace espresso::cpu
