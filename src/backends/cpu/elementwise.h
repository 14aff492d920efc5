// Helpers shared by the CPU element-wise kernels: run a per-element or per-channel operation over
// the thread pool, so each layer's kernel states only its arithmetic.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "backends/kernel.h"
#include "core/parallel.h"
#include "layers/axis.h"

namespace espresso::cpu {

// Below this many elements a chunk is not worth handing to another thread.
constexpr std::int64_t kElementGrain = 1 << 14;

// y[i] = op(x[i]) for i in [0, n), in parallel chunks; x and y may alias.
template <class Op>
void map_elements(const float* x, float* y, std::int64_t n, const Op& op) {
  parallel_for(
      n,
      [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) y[i] = op(x[i]);
      },
      kElementGrain);
}

// Runs body(offset, length, channel) for every (outer, channel) row of a tensor seen as
// outer x channels x inner, in parallel.
template <class Body>
void for_each_channel_row(const AxisSplit& split, const Body& body) {
  const std::int64_t grain =
      std::max<std::int64_t>(1, kElementGrain / std::max<std::int64_t>(1, split.inner));
  parallel_for(
      split.outer * split.channels,
      [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t row = begin; row < end; ++row)
          body(row * split.inner, split.inner, row % split.channels);
      },
      grain);
}

// y = x * multiplier[c] + offset[c] for x seen as outer x channels x inner; x and y may alias.
void channel_affine(const float* x, float* y, const AxisSplit& split, const float* multiplier,
                    const float* offset);
// The implementation channel_affine() runs on this processor.
const char* channel_affine_name();

}  // namespace espresso::cpu
