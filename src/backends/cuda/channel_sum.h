// Per-channel sums of an outer x channels x inner tensor: the bias gradient of the convolutions
// and of InnerProduct.
#pragma once

#include "backends/cuda/channel_affine.h"

namespace espresso::cuda {

// sums[c] += Σ over outer and inner of dy[outer][c][inner], reduced in a fixed order
// (channel_reduce.cuh), so no atomics and the same result every run.
void add_channel_sums(StreamContext& context, const float* dy, float* sums, const ChannelExtent& extent);
// The same with dy stored in `dtype` (f32, f16 or bf16; mixed precision training), summed in fp32.
void add_channel_sums(StreamContext& context, DType dtype, const void* dy, float* sums,
                      const ChannelExtent& extent);

}  // namespace espresso::cuda
