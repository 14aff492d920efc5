#include "backends/cuda/channel_reduce.cuh"
#include "backends/cuda/channel_sum.h"

namespace espresso::cuda {
namespace {

struct Element {
  const float* dy;
  __device__ float operator()(std::int64_t i, std::int64_t) const { return dy[i]; }
};

struct AddTo {
  float* sums;
  __device__ void operator()(std::int64_t c, float sum) const { sums[c] += sum; }
};

}  // namespace

void add_channel_sums(StreamContext& context, const float* dy, float* sums, const ChannelExtent& extent) {
  if (extent.channels == 0 || extent.outer * extent.inner == 0) return;
  reduce_channels<float>(context, extent, Element{dy}, AddTo{sums});
}

}  // namespace espresso::cuda
