// im2col and col2im over a convolution lifted to three spatial axes (conv_tactics.h): the unfolding
// behind the im2col tactic, the convolution backward's GEMM fallback and the deconvolution.
#pragma once

#include <cstdint>

#include "backends/cuda/conv_tactics.h"

namespace espresso::cuda {

// A convolution's windows in the int arithmetic the kernels use: `in` is the image the convolution
// reads, `out` its output positions.
struct ConvWindows {
  int in[3], out[3], kernel[3], stride[3], pad[3], dilation[3];
  int taps, in_spatial, out_spatial;
};

// False when a size does not fit int.
bool conv_windows(const ConvProblem& p, ConvWindows& windows);

// col (channels · taps x out_spatial) = the image's (channels x in_spatial) values under each tap of
// each window, 0 in the padding.
void im2col(StreamContext& context, const ConvWindows& windows, std::int64_t channels, const float* image,
            float* col);
// The same in storage type `dtype` (f32, f16, bf16).
void im2col(StreamContext& context, const ConvWindows& windows, std::int64_t channels, DType dtype,
            const void* image, void* col);

// image (channels x in_spatial) = (or += with `accumulate`) the sum of the col entries that land on
// each element, plus bias[channel] when `bias` is not null. A gather: one thread per image element,
// no atomics, so results are deterministic.
void col2im(StreamContext& context, const ConvWindows& windows, std::int64_t channels, const float* col,
            const float* bias, bool accumulate, float* image);

}  // namespace espresso::cuda
