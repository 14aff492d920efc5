// Index arithmetic shared by the GPU kernels that map each output element to input positions
// (Transpose, StridedSlice, Pad, Binary, Reduce, Resize): shapes up to kMaxRank axes travel to the
// kernel by value.
#pragma once

#include <cstdint>
#include <vector>

namespace espresso::cuda {

constexpr int kMaxRank = 8;

// A shape and one stride per axis (in elements; negative strides walk backwards).
struct StridedDims {
  int rank = 0;
  long long size[kMaxRank] = {};
  long long stride[kMaxRank] = {};
};

inline bool fits_rank(std::size_t rank) { return rank <= static_cast<std::size_t>(kMaxRank); }

inline StridedDims strided_dims(const std::vector<std::int64_t>& sizes,
                                const std::vector<std::int64_t>& strides) {
  StridedDims d;
  d.rank = static_cast<int>(sizes.size());
  for (int k = 0; k < d.rank; ++k) {
    d.size[k] = sizes[static_cast<std::size_t>(k)];
    d.stride[k] = strides[static_cast<std::size_t>(k)];
  }
  return d;
}

// Row-major strides of a shape.
inline std::vector<std::int64_t> contiguous_strides(const std::vector<std::int64_t>& sizes) {
  std::vector<std::int64_t> strides(sizes.size(), 1);
  for (std::size_t k = sizes.size(); k-- > 1;) strides[k - 1] = strides[k] * sizes[k];
  return strides;
}

// The offset that the row-major position `linear` of d's shape has under d's strides.
__device__ inline long long strided_offset(const StridedDims& d, long long linear) {
  long long offset = 0;
  for (int k = d.rank - 1; k >= 0; --k) {
    const long long i = linear % d.size[k];
    linear /= d.size[k];
    offset += i * d.stride[k];
  }
  return offset;
}

}  // namespace espresso::cuda
