// Direct convolution for short windows over few channels (a net's first layer on an RGB image: 3 × 7 × 7
// at stride 2 in ResNet, 3 × 3 × 3 in SqueezeNet and MobileNet), where packing the windows for the GEMM
// cost as much as the product: each image is copied once into a zero-bordered copy whose rows are split
// into the stride's column phases (phase f of a row holds its columns f, f + s, f + 2s, ...), so that one
// window tap's inputs for consecutive outputs of a row are consecutive floats. The GEMM's micro-kernel
// then reads them in place through a table of each tap's offset (gemm_row_table), one output row at a
// time, with the same packed weights, the same sums in the same order and the same epilogue as the
// windows' GEMM.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/cpu/gemm.h"

namespace espresso::cpu {

class DirectConvolution {
 public:
  // `shape` gives the image and window geometry (its image pointer is not used); `channels` the input
  // channels (one group).
  DirectConvolution(const ConvWindows& shape, std::int64_t channels);

  // Whether the tactic is worth trying: a depth (channels × window) of at most one GEMM depth block, so
  // that the rows one tile reads stay in L1 (pack_positions takes any depth).
  static bool applies(const ConvWindows& shape, std::int64_t channels);

  // Floats of the phase-split copy of one image.
  std::int64_t phases_size() const { return channels_ * padded_height_ * row_stride_; }
  // One image (channels × height × width) into `phases`, rows spread over the pool's threads.
  void split_phases(const float* image, float* phases) const;
  // Output rows [row0, row1) of the image whose phases are given: channel k's row r at
  // c + k·ldc + (r − row0)·out_width, as gemm_row_table computes them (beta, epilogue). The epilogue's
  // residual, if any, is addressed the same way from row0. Calling thread only.
  void output_rows(const PackedMatrix& weights, const float* phases, std::int64_t row0, std::int64_t row1,
                   float* c, std::int64_t ldc, const GemmEpilogue& epilogue, float beta = 0.0f) const;
  // The windows the other way round, for a GEMM with the output channels along the vectors: row i of
  // `positions` (out_height·out_width × channels·window, made by PackedMatrix::zeros) holds output
  // position i's window, read from the image's phases; panels [panel0, panel1) written. AVX-512 only.
  void pack_positions(const float* phases, PackedMatrix& positions, std::int64_t panel0,
                      std::int64_t panel1) const;

 private:
  ConvWindows shape_;
  std::int64_t channels_;
  std::int64_t padded_height_ = 0;  // input rows from −pad_h to the last one a window reads
  std::int64_t phases_ = 1;         // column phases kept per row (those some tap reads)
  std::int64_t phase_length_ = 0;   // floats of one phase of a row
  std::int64_t row_stride_ = 0;     // floats of one row's phases
  std::vector<std::int64_t> taps_;  // offset of tap (channel, ky, kx) from an output row's first input
};

}  // namespace espresso::cpu
