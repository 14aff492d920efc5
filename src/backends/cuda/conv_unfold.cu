#include <limits>

#include "backends/cuda/conv_unfold.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"

namespace espresso::cuda {
namespace {

template <class T>  // the storage type (precision.cuh)
__global__ void unfold(ConvWindows u, long long total, const T* __restrict__ image, T* __restrict__ col) {
  for (long long i : grid_stride(total)) {
    const int position = static_cast<int>(i % u.out_spatial);
    const long long row = i / u.out_spatial;
    const int tap = static_cast<int>(row % u.taps);
    const long long channel = row / u.taps;
    const int od = position / (u.out[1] * u.out[2]);
    const int oh = position / u.out[2] % u.out[1];
    const int ow = position % u.out[2];
    const int kd = tap / (u.kernel[1] * u.kernel[2]);
    const int kh = tap / u.kernel[2] % u.kernel[1];
    const int kw = tap % u.kernel[2];
    const int id = od * u.stride[0] - u.pad[0] + kd * u.dilation[0];
    const int ih = oh * u.stride[1] - u.pad[1] + kh * u.dilation[1];
    const int iw = ow * u.stride[2] - u.pad[2] + kw * u.dilation[2];
    const bool inside = id >= 0 && id < u.in[0] && ih >= 0 && ih < u.in[1] && iw >= 0 && iw < u.in[2];
    col[i] =
        inside ? image[channel * u.in_spatial + (id * u.in[1] + ih) * u.in[2] + iw] : from_float<T>(0.0f);
  }
}

// Image position i on an axis receives tap k from output position (i + pad − k · dilation) / stride
// when that divides exactly and lies inside the output.
__global__ void fold(ConvWindows u, long long total, const float* __restrict__ col,
                     const float* __restrict__ bias, bool accumulate, float* __restrict__ image) {
  for (long long i : grid_stride(total)) {
    const int position = static_cast<int>(i % u.in_spatial);
    const long long channel = i / u.in_spatial;
    const int at[3] = {position / (u.in[1] * u.in[2]), position / u.in[2] % u.in[1], position % u.in[2]};
    float sum = bias != nullptr ? bias[channel] : 0.0f;
    const float* rows = col + channel * u.taps * u.out_spatial;
    for (int kd = 0; kd < u.kernel[0]; ++kd) {
      const int td = at[0] + u.pad[0] - kd * u.dilation[0];
      if (td < 0 || td % u.stride[0] != 0 || td / u.stride[0] >= u.out[0]) continue;
      for (int kh = 0; kh < u.kernel[1]; ++kh) {
        const int th = at[1] + u.pad[1] - kh * u.dilation[1];
        if (th < 0 || th % u.stride[1] != 0 || th / u.stride[1] >= u.out[1]) continue;
        for (int kw = 0; kw < u.kernel[2]; ++kw) {
          const int tw = at[2] + u.pad[2] - kw * u.dilation[2];
          if (tw < 0 || tw % u.stride[2] != 0 || tw / u.stride[2] >= u.out[2]) continue;
          const int tap = (kd * u.kernel[1] + kh) * u.kernel[2] + kw;
          const int source = (td / u.stride[0] * u.out[1] + th / u.stride[1]) * u.out[2] + tw / u.stride[2];
          sum += rows[static_cast<long long>(tap) * u.out_spatial + source];
        }
      }
    }
    image[i] = accumulate ? image[i] + sum : sum;
  }
}

}  // namespace

bool conv_windows(const ConvProblem& p, ConvWindows& u) {
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  if (p.in_spatial() > int_max || p.out_spatial() > int_max || p.taps() > int_max) return false;
  for (int a = 0; a < 3; ++a) {
    const auto i = static_cast<std::size_t>(a);
    // Positions reach in + pad and out · stride: keep those in int as well.
    if (p.in[i] + p.pad[i] + p.dilation[i] * p.kernel[i] > int_max || p.out[i] * p.stride[i] > int_max) {
      return false;
    }
    u.in[a] = static_cast<int>(p.in[i]);
    u.out[a] = static_cast<int>(p.out[i]);
    u.kernel[a] = static_cast<int>(p.kernel[i]);
    u.stride[a] = static_cast<int>(p.stride[i]);
    u.pad[a] = static_cast<int>(p.pad[i]);
    u.dilation[a] = static_cast<int>(p.dilation[i]);
  }
  u.taps = static_cast<int>(p.taps());
  u.in_spatial = static_cast<int>(p.in_spatial());
  u.out_spatial = static_cast<int>(p.out_spatial());
  return true;
}

void im2col(StreamContext& context, const ConvWindows& windows, std::int64_t channels, const float* image,
            float* col) {
  im2col(context, windows, channels, DType::f32, image, col);
}

void im2col(StreamContext& context, const ConvWindows& windows, std::int64_t channels, DType dtype,
            const void* image, void* col) {
  const long long total = channels * windows.taps * static_cast<long long>(windows.out_spatial);
  if (total == 0) return;
  with_storage_type(dtype, "im2col", [&](auto type) {
    using T = decltype(type);
    launch(context, total, unfold<T>, windows, total, static_cast<const T*>(image), static_cast<T*>(col));
  });
}

void col2im(StreamContext& context, const ConvWindows& windows, std::int64_t channels, const float* col,
            const float* bias, bool accumulate, float* image) {
  const long long total = channels * static_cast<long long>(windows.in_spatial);
  if (total == 0) return;
  launch(context, total, fold, windows, total, col, bias, accumulate, image);
}

}  // namespace espresso::cuda
