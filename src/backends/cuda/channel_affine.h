// y = x · scale[c] + shift[c] over an outer x channels x inner tensor: bias after a GEMM, and the
// BatchNorm, Scale and Bias layers; and its gradients.
#pragma once

#include <cstdint>
#include <limits>

#include "backends/cuda/context.h"

namespace espresso::cuda {

struct ChannelExtent {
  std::int64_t outer = 1, channels = 1, inner = 1;
};

// Either of `scale` and `shift` may be null (1 and 0); `x` may equal `y`.
void channel_affine(StreamContext& context, const float* x, const float* scale, const float* shift, float* y,
                    const ChannelExtent& extent);
// The same with x and y stored in `dtype` (f32, f16, bf16); the parameters stay float.
void channel_affine(StreamContext& context, DType dtype, const void* x, const float* scale,
                    const float* shift, void* y, const ChannelExtent& extent);

// What a convolution adds to its product on the way out when the planner fused the steps after it
// (Kernel::fuse_residual, accumulate_output, fuse_clamp, redirect_output): destination = clamp(y + shift[c] +
// residual, lo, hi).
struct Epilogue {
  const void* residual = nullptr;  // y's type and shape, or null
  void* destination = nullptr;     // y's type and shape (it may be the residual), or null: y itself
  // Elements from one image to the next in destination when it is another tensor's slice (a channel
  // Concat's), else 0 (y's own image size).
  std::int64_t destination_image_stride = 0;
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
  bool active() const {
    return residual != nullptr || destination != nullptr || lo != -std::numeric_limits<float>::infinity() ||
           hi != std::numeric_limits<float>::infinity();
  }
};

// epilogue.destination, else y (stored in `dtype`) = clamp(y + shift[c] + epilogue.residual, epilogue.lo,
// epilogue.hi) in one pass; `shift` may be null.
void channel_epilogue(StreamContext& context, DType dtype, void* y, const float* shift,
                      const Epilogue& epilogue, const ChannelExtent& extent);

// The gradient with respect to x: dx += dy · scale[c] (`scale` null: 1), dy and dx stored in `dtype` (f32,
// or f16 / bf16 in mixed precision training), computed in float.
void channel_scale_add(StreamContext& context, DType dtype, const void* dy, const float* scale, void* dx,
                       const ChannelExtent& extent);

// The gradients with respect to the parameters, summed in float over each channel's outer x inner
// elements: dscale[c] += Σ dy·x and dshift[c] += Σ dy, dy and x stored in `dtype`. Either output may be
// null (then `x` may be too).
void channel_parameter_grads(StreamContext& context, DType dtype, const void* dy, const void* x,
                             float* dscale, float* dshift, const ChannelExtent& extent);

}  // namespace espresso::cuda
