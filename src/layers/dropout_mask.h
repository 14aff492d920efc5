// Dropout's mask as a pure function of (seed, draw, element), so that the CPU reference and the CUDA
// kernel draw identical masks and any element's bit can be computed on its own, in parallel. It is
// splitmix64: its output function applied to a counter stepped by the golden ratio; only integer
// operations and one exact conversion, so host and device agree bit for bit.
#pragma once

#include <cstdint>

#include "core/host_device.h"

namespace espresso {

inline constexpr std::uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;

// splitmix64's output function: a bijection of 64-bit words in which every output bit depends on
// every input bit.
ESPRESSO_HOST_DEVICE inline std::uint64_t splitmix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The starting point of the stream that draw number `draw` (1 for a layer's first training forward)
// of the layer seeded with `seed` takes its mask from.
ESPRESSO_HOST_DEVICE inline std::uint64_t dropout_stream(std::uint64_t seed, std::uint64_t draw) {
  return splitmix64(seed ^ splitmix64(draw * kGoldenGamma));
}

// Whether element `index` is kept: its uniform value in [0, 1), 24 random bits so that the float is
// exact, is at least `ratio`, which happens with probability 1 − ratio.
ESPRESSO_HOST_DEVICE inline bool dropout_keeps(std::uint64_t stream, std::uint64_t index, float ratio) {
  const std::uint64_t bits = splitmix64(stream + (index + 1) * kGoldenGamma);
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f) >= ratio;
}

}  // namespace espresso
