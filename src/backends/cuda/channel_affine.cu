#include "backends/cuda/channel_affine.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;

template <bool kScale, bool kShift>
__global__ void affine(const float* x, const float* scale, const float* shift, float* y, std::int64_t n,
                       std::int64_t channels, std::int64_t inner) {
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t c = i / inner % channels;
    float v = x[i];
    if constexpr (kScale) v *= scale[c];
    if constexpr (kShift) v += shift[c];
    y[i] = v;
  }
}

}  // namespace

void channel_affine(StreamContext& context, const float* x, const float* scale, const float* shift, float* y,
                    const ChannelExtent& extent) {
  const std::int64_t n = extent.outer * extent.channels * extent.inner;
  if (n == 0) return;
  const unsigned blocks = elementwise_blocks(context, n, kThreads);
  auto launch = [&](auto kernel) {
    kernel<<<blocks, kThreads, 0, context.stream()>>>(x, scale, shift, y, n, extent.channels, extent.inner);
  };
  if (scale != nullptr && shift != nullptr) {
    launch(affine<true, true>);
  } else if (scale != nullptr) {
    launch(affine<true, false>);
  } else if (shift != nullptr) {
    launch(affine<false, true>);
  } else if (x != y) {
    ESPRESSO_CUDA_CHECK(cudaMemcpyAsync(y, x, static_cast<std::size_t>(n) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, context.stream()));
    return;
  } else {
    return;
  }
  ESPRESSO_CUDA_CHECK(cudaGetLastError());
}

}  // namespace espresso::cuda
