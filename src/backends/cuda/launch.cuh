// Launching CUDA kernels without repeating the set-up: every launch goes on the context's stream and is
// checked at once, so that a bad configuration is reported at the launch that caused it rather than at
// some later synchronisation; and the index loops and warp reductions every kernel needs are written
// once here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "backends/cuda/context.h"

namespace espresso::cuda {

// Threads per block of the element-wise launches: every kernel here is tuned for it, and the
// per-block reductions (block_sum) size their shared memory from it.
constexpr int kThreads = 256;
constexpr int kWarp = 32;

// The indices first, first + step, ... below end. Kernels launched with fewer threads than there is
// work (elementwise_blocks caps the grid) loop over it this way, which keeps neighbouring threads on
// neighbouring elements, so loads coalesce.
class StrideRange {
 public:
  class Iterator {
   public:
    __device__ Iterator(std::int64_t at, std::int64_t step) : at_(at), step_(step) {}
    __device__ std::int64_t operator*() const { return at_; }
    __device__ Iterator& operator++() {
      at_ += step_;
      return *this;
    }
    // The end is a bound, not a position the steps reach exactly.
    __device__ bool operator!=(const Iterator& end) const { return at_ < end.at_; }

   private:
    std::int64_t at_, step_;
  };

  __device__ StrideRange(std::int64_t first, std::int64_t end, std::int64_t step)
      : first_(first), end_(end), step_(step) {}
  __device__ Iterator begin() const { return {first_, step_}; }
  __device__ Iterator end() const { return {end_, step_}; }

 private:
  std::int64_t first_, end_, step_;
};

// 0 .. n − 1 spread over every thread of the grid: `for (std::int64_t i : grid_stride(n))`.
__device__ inline StrideRange grid_stride(std::int64_t n) {
  return {blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x, n, std::int64_t{gridDim.x} * blockDim.x};
}

// 0 .. n − 1 spread over every warp of the grid, for kernels whose lanes share one task (a reduction
// with shuffles); launch them with kWarp threads of work per task.
__device__ inline StrideRange warp_stride(std::int64_t n) {
  return {(blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x) / kWarp, n,
          std::int64_t{gridDim.x} * (blockDim.x / kWarp)};
}

// 0 .. n − 1 spread over the blocks of the grid, for kernels whose threads share one task (a
// reduction through shared memory).
__device__ inline StrideRange block_stride(std::int64_t n) { return {blockIdx.x, n, gridDim.x}; }

// The sum and the maximum of a value over the 32 lanes of a warp, returned to every lane; every lane
// must call them. They add in a fixed butterfly order, so results are reproducible.
template <typename T>
__device__ T warp_sum(T value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__device__ inline float warp_max(float value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

// visit(Index{}) with Index std::uint32_t where every index of an n-element tensor fits in 31 bits, else
// std::int64_t: element-wise kernels that find each element's channel divide per element, and 32-bit
// divisions are several times cheaper.
template <typename Visit>
void with_index_type(std::int64_t n, Visit&& visit) {
  if (n <= std::int64_t{0x7fffffff}) {
    visit(std::uint32_t{});
  } else {
    visit(std::int64_t{});
  }
}

// Queues kernel(args...) on the context's stream with kThreads-thread blocks, enough to cover `work`
// threads up to a full GPU (the kernel loops over the rest with grid_stride or warp_stride).
template <typename... Params, typename... Args>
void launch(const StreamContext& context, std::int64_t work, void (*kernel)(Params...), Args&&... args) {
  kernel<<<elementwise_blocks(context, work, kThreads), kThreads, 0, context.stream()>>>(
      std::forward<Args>(args)...);
  ESPRESSO_CUDA_CHECK(cudaGetLastError());
}

// The shape of a launch that is not element-wise: one block per row or channel, a single block
// reducing everything, tiles with dynamic shared memory.
struct Grid {
  dim3 blocks;
  dim3 threads;
  std::size_t shared_bytes = 0;
};

template <typename... Params, typename... Args>
void launch(const StreamContext& context, const Grid& grid, void (*kernel)(Params...), Args&&... args) {
  kernel<<<grid.blocks, grid.threads, grid.shared_bytes, context.stream()>>>(std::forward<Args>(args)...);
  ESPRESSO_CUDA_CHECK(cudaGetLastError());
}

}  // namespace espresso::cuda
