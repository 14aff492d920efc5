#include <algorithm>

#include "backends/cuda/channel_sum.h"
#include "backends/cuda/launch.cuh"

namespace espresso::cuda {
namespace {

constexpr long long kMaxBlocks = 65535;

__global__ void channel_sums(const float* __restrict__ dy, float* __restrict__ sums, long long outer,
                             long long channels, long long inner) {
  __shared__ float warp_sums[kThreads / kWarp];
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  // Each thread walks (n, i) pairs blockDim apart: coalesced along inner when it is long, and no
  // division inside the loop when it is short (InnerProduct's is 1).
  const long long step_n = blockDim.x / inner, step_i = blockDim.x % inner;
  for (long long c : block_stride(channels)) {
    float partial = 0.0f;
    long long n = threadIdx.x / inner, i = threadIdx.x % inner;
    while (n < outer) {
      partial += dy[(n * channels + c) * inner + i];
      n += step_n;
      i += step_i;
      if (i >= inner) {
        i -= inner;
        ++n;
      }
    }
    partial = warp_sum(partial);
    if (lane == 0) warp_sums[warp] = partial;
    __syncthreads();
    if (warp == 0) {
      partial = warp_sum(lane < kThreads / kWarp ? warp_sums[lane] : 0.0f);
      if (lane == 0) sums[c] += partial;
    }
    // warp_sums is refilled for the next channel.
    __syncthreads();
  }
}

}  // namespace

void add_channel_sums(StreamContext& context, const float* dy, float* sums, const ChannelExtent& extent) {
  if (extent.channels == 0 || extent.inner == 0) return;
  const auto blocks = static_cast<unsigned>(std::min<long long>(extent.channels, kMaxBlocks));
  launch(context, Grid{blocks, kThreads}, channel_sums, dy, sums, extent.outer, extent.channels,
         extent.inner);
}

}  // namespace espresso::cuda
