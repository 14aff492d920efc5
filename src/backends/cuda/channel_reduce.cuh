// Per-channel sums over an outer x channels x inner tensor (BatchNorm's statistics and gradient sums,
// the gradients of Scale and Bias, the bias gradients of convolutions), spread over the whole GPU and
// reproducible. Each channel's outer·inner elements are cut into runs; one block sums a run (a fixed
// tree, block_sum) and a second kernel adds a channel's run sums in order. One block per channel had
// left most of an H200 idle on ResNet's few wide channels (64 channels of 800k elements at its stem:
// 3.5 ms for a BatchNorm's statistics).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "backends/cuda/block_sum.cuh"
#include "backends/cuda/channel_packs.cuh"
#include "backends/cuda/launch.cuh"

namespace espresso::cuda {

// Runs per channel: about kRunElements elements each, at most kMaxRuns.
constexpr std::int64_t kRunElements = 16384;
constexpr std::int64_t kMaxRuns = 64;

inline std::int64_t channel_runs(const ChannelExtent& extent) {
  const std::int64_t per_channel = extent.outer * extent.inner;
  return std::clamp<std::int64_t>((per_channel + kRunElements - 1) / kRunElements, 1, kMaxRuns);
}

// Block b sums run b % runs of channel b / runs: Σ term.pack<kVec>(i, c) over the run's packs of kVec
// elements (i the flat index of a pack's first). Runs are `length` elements, a multiple of kVec, and
// kVec divides extent.inner, so a pack never leaves its image's channel plane. With one run per channel
// the block hands its sum to finish(c, sum) itself, else stores it in partial[b].
template <int kVec, typename Sum, typename Term, typename Finish>
__global__ void channel_run_sums(Term term, Finish finish, ChannelExtent extent, std::int64_t runs,
                                 std::int64_t length, Sum* __restrict__ partial) {
  const std::int64_t per_channel = extent.outer * extent.inner;
  // Threads step blockDim packs at a time as (image, offset) pairs: no division inside the loop.
  const std::int64_t step = std::int64_t{blockDim.x} * kVec;
  const std::int64_t step_n = step / extent.inner, step_k = step % extent.inner;
  for (std::int64_t task : block_stride(extent.channels * runs)) {
    const std::int64_t c = task / runs;
    const std::int64_t begin = task % runs * length;
    const std::int64_t end = begin + length < per_channel ? begin + length : per_channel;
    Sum local{};
    std::int64_t j = begin + std::int64_t{threadIdx.x} * kVec;
    std::int64_t n = j / extent.inner, k = j % extent.inner;
    for (; j < end; j += step) {
      local += term.template pack<kVec>((n * extent.channels + c) * extent.inner + k, c);
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

// term: a device functor with `template <int kVec> Sum pack(std::int64_t i, std::int64_t channel)`, the
// sum of its terms for elements i .. i + kVec − 1 of a channel (read as one access where kVec is
// Term::kWide), and `bool wide() const`, whether its tensors' addresses allow that; finish: void
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
  const auto sum_runs = [&](auto width) {
    constexpr int kVec = decltype(width)::value;
    const std::int64_t per_channel = extent.outer * extent.inner;
    const std::int64_t length = ((per_channel + runs - 1) / runs + kVec - 1) / kVec * kVec;
    launch(context, Grid{blocks, kThreads}, channel_run_sums<kVec, Sum, Term, Finish>, term, finish, extent,
           runs, length, partial);
  };
  if (extent.inner % Term::kWide == 0 && term.wide()) {
    sum_runs(std::integral_constant<int, Term::kWide>{});
  } else {
    sum_runs(std::integral_constant<int, 1>{});
  }
  if (runs > 1)
    launch(context, extent.channels, finish_channel_sums<Sum, Finish>, partial, extent.channels, runs,
           finish);
}

}  // namespace espresso::cuda
