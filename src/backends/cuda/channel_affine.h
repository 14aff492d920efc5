// y = x · scale[c] + shift[c] over an outer x channels x inner tensor: bias after a GEMM, and the
// BatchNorm, Scale and Bias layers.
#pragma once

#include <cstdint>

#include "backends/cuda/context.h"

namespace espresso::cuda {

struct ChannelExtent {
  std::int64_t outer = 1, channels = 1, inner = 1;
};

// Either of `scale` and `shift` may be null (1 and 0); `x` may equal `y`.
void channel_affine(StreamContext& context, const float* x, const float* scale, const float* shift, float* y,
                    const ChannelExtent& extent);

}  // namespace espresso::cuda
