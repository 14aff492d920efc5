// Sums over one thread block: the per-channel reductions (channel_reduce.cuh), Normalize's.
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

}  // namespace espresso::cuda
