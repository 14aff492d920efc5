// Packs of consecutive elements read and written as one 16-byte access where the tensors' addresses allow
// (8 halves, 4 floats): the element-wise kernels of training (BatchNorm, the convolution epilogue, ReLU,
// Binary, pooling's backward) and the per-channel sums. Scalar loads of 2-byte halves had kept too few
// bytes in flight to reach the GPU's bandwidth. Kernels over an outer x channels x inner tensor find the
// channels of a pack's elements with one division per pack instead of two per element (for_each_pack).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "backends/cuda/launch.cuh"

namespace espresso::cuda {

// kVec consecutive elements of T, aligned to be loaded as one access when kVec · sizeof(T) is 16.
template <class T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// The widest pack of T for a 16-byte access.
template <class T>
constexpr int kWidePack = 16 / static_cast<int>(sizeof(T));

// The first `count` elements at p (all kVec of them as one access when count == kVec); the rest are zero.
template <int kVec, class T>
__device__ Pack<T, kVec> load_pack(const T* p, int count) {
  if (count == kVec) return *reinterpret_cast<const Pack<T, kVec>*>(p);
  Pack<T, kVec> pack{};
  for (int j = 0; j < count; ++j) pack.v[j] = p[j];
  return pack;
}

template <int kVec, class T>
__device__ void store_pack(T* p, const Pack<T, kVec>& pack, int count) {
  if (count == kVec) {
    *reinterpret_cast<Pack<T, kVec>*>(p) = pack;
    return;
  }
  for (int j = 0; j < count; ++j) p[j] = pack.v[j];
}

// body(i, count) for the packs of kVec elements of 0 .. n − 1 spread over the grid: elements i to
// i + count − 1 (count < kVec only for the last pack).
template <int kVec, class Index, class Body>
__device__ void for_each_flat_pack(Index n, Body&& body) {
  for (std::int64_t at : grid_stride((n + kVec - 1) / kVec)) {
    const Index i = static_cast<Index>(at) * kVec;
    body(i, n - i < kVec ? static_cast<int>(n - i) : kVec);
  }
}

// for_each_flat_pack with body(i, count, channel): channel[j] the channel of element i + j.
template <int kVec, class Index, class Body>
__device__ void for_each_pack(Index n, Index channels, Index inner, Body&& body) {
  for_each_flat_pack<kVec>(n, [&](Index i, int count) {
    const Index image_channel = i / inner;
    Index k = i - image_channel * inner;
    Index c = image_channel % channels;
    Index channel[kVec];
    for (int j = 0; j < kVec; ++j) {
      channel[j] = c;
      if (++k == inner) {
        k = 0;
        if (++c == channels) c = 0;
      }
    }
    body(i, count, channel);
  });
}

// Whether every address given (null ones aside) allows 16-byte accesses.
inline bool wide_aligned(std::initializer_list<const void*> addresses) {
  for (const void* p : addresses) {
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// visit(std::integral_constant<int, kVec>{}) with kVec the widest pack of T where the addresses allow
// it, else 1. Launch the kernel with (n + kVec − 1) / kVec threads of work.
template <class T, class Visit>
void with_pack_width(std::initializer_list<const void*> addresses, Visit&& visit) {
  if (wide_aligned(addresses)) {
    visit(std::integral_constant<int, kWidePack<T>>{});
  } else {
    visit(std::integral_constant<int, 1>{});
  }
}

}  // namespace espresso::cuda
