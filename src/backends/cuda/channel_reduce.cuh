// Per-channel sums over an outer x channels x inner tensor (BatchNorm's statistics and gradient sums,
// the gradients of Scale and Bias, the bias gradients of convolutions), spread over the whole GPU and
// reproducible. Each channel's outer·inner elements are cut into runs; one block sums a run (a fixed
// tree, block_sum) and a second kernel adds a channel's run sums in order. One block per channel had
// left most of an H200 idle on ResNet's few wide channels (64 channels of 800k elements at its stem:
// 3.5 ms for a BatchNorm's statistics).
#pragma once

#include <algorithm>
#include <cstdint>

#include "backends/cuda/block_sum.cuh"
#include "backends/cuda/launch.cuh"

namespace espresso::cuda {

// Runs per channel: about kRunElements elements each, at most kMaxRuns.
constexpr std::int64_t kRunElements = 16384;
constexpr std::int64_t kMaxRuns = 64;

inline std::int64_t channel_runs(const ChannelExtent& extent) {
  const std::int64_t per_channel = extent.outer * extent.inner;
  return std::clamp<std::int64_t>((per_channel + kRunElements - 1) / kRunElements, 1, kMaxRuns);
}

// Block b sums run b % runs of channel b / runs: Σ term(i, c) over the run's flat indices i. With one run
// per channel the block hands its sum to finish(c, sum) itself, else stores it in partial[b].
template <typename Sum, typename Term, typename Finish>
__global__ void channel_run_sums(Term term, Finish finish, ChannelExtent extent, std::int64_t runs,
                                 Sum* __restrict__ partial) {
  const std::int64_t per_channel = extent.outer * extent.inner;
  const std::int64_t length = (per_channel + runs - 1) / runs;
  // Threads step blockDim elements at a time as (image, offset) pairs: no division inside the loop.
  const std::int64_t step_n = blockDim.x / extent.inner, step_k = blockDim.x % extent.inner;
  for (std::int64_t task : block_stride(extent.channels * runs)) {
    const std::int64_t c = task / runs;
    const std::int64_t begin = task % runs * length;
    const std::int64_t end = begin + length < per_channel ? begin + length : per_channel;
    Sum local{};
    std::int64_t j = begin + threadIdx.x;
    std::int64_t n = j / extent.inner, k = j % extent.inner;
    for (; j < end; j += blockDim.x) {
      local += term((n * extent.channels + c) * extent.inner + k, c);
      n += step_n;
      k += step_k;
      if (k >= extent.inner) {
        k -= extent.inner;
        ++n;
      }
    }
    const Sum total = block_sum<kThreads>(local);
    if (threadIdx.x == 0) {
      if (runs == 1) {
        finish(c, total);
      } else {
        partial[task] = total;
      }
    }
  }
}

template <typename Sum, typename Finish>
__global__ void finish_channel_sums(const Sum* __restrict__ partial, std::int64_t channels, std::int64_t runs,
                                    Finish finish) {
  for (std::int64_t c : grid_stride(channels)) {
    Sum total = partial[c * runs];
    for (std::int64_t r = 1; r < runs; ++r) total += partial[c * runs + r];
    finish(c, total);
  }
}

// term: a device functor, Sum term(std::int64_t flat_index, std::int64_t channel); finish: void
// finish(std::int64_t channel, Sum total). Partial sums go to the stream's shared workspace, reserved here
// when it is too small: at a run, which is safe since the first run of a net's forward and of its backward is
// never captured (Net::forward_backward records a training step only after one ran unrecorded).
template <typename Sum, typename Term, typename Finish>
void reduce_channels(StreamContext& context, const ChannelExtent& extent, Term term, Finish finish) {
  // Empty channels: nothing to sum, and callers make nothing of them.
  if (extent.channels == 0 || extent.outer * extent.inner == 0) return;
  const std::int64_t runs = channel_runs(extent);
  Sum* partial = nullptr;
  if (runs > 1) {
    const auto bytes = static_cast<std::size_t>(extent.channels * runs) * sizeof(Sum);
    context.reserve_workspace(bytes);
    partial = static_cast<Sum*>(context.workspace());
  }
  constexpr std::int64_t kMaxBlocks = std::int64_t{1} << 16;
  const auto blocks = static_cast<unsigned>(std::min(extent.channels * runs, kMaxBlocks));
  launch(context, Grid{blocks, kThreads}, channel_run_sums<Sum, Term, Finish>, term, finish, extent, runs,
         partial);
  if (runs > 1)
    launch(context, extent.channels, finish_channel_sums<Sum, Finish>, partial, extent.channels, runs,
           finish);
}

}  // namespace espresso::cuda
