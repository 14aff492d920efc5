// Sums over one thread block, for the per-channel reductions of BatchNorm, Scale and Bias: a block
// owns a channel and its threads stride over the channel's outer x inner elements.
#pragma once

#include "backends/cuda/channel_affine.h"

namespace espresso::cuda {

// The sum of every thread's `value`, returned to all threads of the block; every thread must call it.
// kThreads is the block size, a power of two; T needs += and a trivial constructor (it lives in
// shared memory). The tree adds in a fixed order, so results are reproducible.
template <int kThreads, typename T>
__device__ T block_sum(T value) {
  __shared__ T partial[kThreads];
  __syncthreads();  // threads still reading partial[0] from a previous call
  partial[threadIdx.x] = value;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  return partial[0];
}

// The offset of element j (of the outer x inner run) of channel c.
__device__ inline long long channel_element(const ChannelExtent& extent, long long c, long long j) {
  return (j / extent.inner * extent.channels + c) * extent.inner + j % extent.inner;
}

// Two sums reduced together.
template <typename T>
struct SumPair {
  T first, second;
  __device__ SumPair& operator+=(const SumPair& other) {
    first += other.first;
    second += other.second;
    return *this;
  }
};

// Blocks for a kernel that loops over channels with one block per channel.
inline unsigned channel_blocks(std::int64_t channels) {
  constexpr std::int64_t kMaxBlocks = std::int64_t{1} << 16;
  return static_cast<unsigned>(channels < kMaxBlocks ? channels : kMaxBlocks);
}

}  // namespace espresso::cuda
