#include "backends/cuda/channel_reduce.cuh"
#include "backends/cuda/channel_sum.h"
#include "backends/cuda/precision.cuh"

namespace espresso::cuda {
namespace {

template <class T>
struct Element {
  static constexpr int kWide = kWidePack<T>;
  const T* dy;
  bool wide() const { return wide_aligned({dy}); }
  template <int kVec>
  __device__ float pack(std::int64_t i, std::int64_t) const {
    const Pack<T, kVec> g = load_pack<kVec>(dy + i, kVec);
    float sum = 0.0f;
    for (int j = 0; j < kVec; ++j) sum += to_float(g.v[j]);
    return sum;
  }
};

struct AddTo {
  float* sums;
  __device__ void operator()(std::int64_t c, float sum) const { sums[c] += sum; }
};

}  // namespace

void add_channel_sums(StreamContext& context, const float* dy, float* sums, const ChannelExtent& extent) {
  add_channel_sums(context, DType::f32, dy, sums, extent);
}

void add_channel_sums(StreamContext& context, DType dtype, const void* dy, float* sums,
                      const ChannelExtent& extent) {
  if (extent.channels == 0 || extent.outer * extent.inner == 0) return;
  with_storage_type(dtype, "channel sums", [&](auto type) {
    using T = decltype(type);
    reduce_channels<float>(context, extent, Element<T>{static_cast<const T*>(dy)}, AddTo{sums});
  });
}

}  // namespace espresso::cuda
