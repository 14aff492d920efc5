#include "backends/cuda/channel_reduce.cuh"
#include "backends/cuda/channel_sum.h"
#include "backends/cuda/precision.cuh"

namespace espresso::cuda {
namespace {

template <class T>
struct Element {
  const T* dy;
  __device__ float operator()(std::int64_t i, std::int64_t) const { return to_float(dy[i]); }
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
