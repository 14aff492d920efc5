// Per-channel sums of an outer x channels x inner tensor: the bias gradient of the convolutions
// and of InnerProduct.
#pragma once

#include "backends/cuda/channel_affine.h"

namespace espresso::cuda {

// sums[c] += Σ over outer and inner of dy[outer][c][inner], reduced in a fixed order
// (channel_reduce.cuh), so no atomics and the same result every run.
void add_channel_sums(StreamContext& context, const float* dy, float* sums, const ChannelExtent& extent);

}  // namespace espresso::cuda
