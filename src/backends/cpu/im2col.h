// Window unfolding for GEMM-based convolution, for any number of spatial axes.
#pragma once

#include <cstdint>
#include <vector>

namespace espresso::cpu {

// One image of `channels` planes of size `image`, read through a window of `kernel` taps at every
// position of `columns` (a convolution's output size).
struct WindowLayout {
  std::int64_t channels = 0;
  std::vector<std::int64_t> image, columns, kernel, stride, pad, dilation;
};

// col is (channels · Πkernel) x Πcolumns: row (c, tap) holds the image value each window
// position reads through that tap, 0 where it reads padding.
void im2col(const float* image, const WindowLayout& layout, float* col);

// The adjoint of im2col: adds every column entry into the image position it would be read from.
// The image must be initialised (zeros or a bias).
void col2im(const float* col, const WindowLayout& layout, float* image);

}  // namespace espresso::cpu
