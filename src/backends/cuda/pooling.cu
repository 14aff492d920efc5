// Pooling on the GPU, lifted to three spatial axes like the convolutions, so 1D, 2D and 3D share
// one kernel: a thread per output computes its window exactly as PoolGeometry::span does. Global
// pooling, where one window covers a whole plane, gets a warp per plane instead.
//
// Backward gathers: a thread per input element (per 16-byte pack of a row in 2-D pooling whose windows
// overlap pairwise, unpool_pairs) sums the gradients of the windows that cover it, so no atomics and a
// fixed order of additions. Max pooling sends a window's gradient to its first maximum
// in window order, the one the reference picks (src/layers/pooling.cpp): a training forward keeps it
// per window (a kernel made for inference finds it in a first pass, into the stream's workspace), so
// the gather reads one index per covering window instead of scanning every covering window again
// (3 x 3 stride-2 windows: 9 reads per output, not 36 per input). The index is the maximum's tap in its
// window, a byte where windows have at most 256 taps (ResNet-18's stem pooling keeps 13 MB at batch 64,
// not 51).
//
// fp16 / bf16 (inference and training) instantiate the same kernels for their storage type. Channels-last
// inference plans pool N, H, W, C tensors: the window kernel with channels fastest, global pooling a thread
// per image and channel.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "backends/cuda/channel_packs.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"
#include "layers/pooling.h"

namespace espresso::cuda {
namespace {

struct Windows {
  long long planes;   // batch * channels
  int channels;
  long long outputs;  // planes * out_spatial
  int in[3], out[3], kernel[3], stride[3], pad[3];
  int in_spatial, out_spatial;
  bool average, count_include_pad;
};

template <class T>
__global__ void pool_planes(const T* __restrict__ x, T* __restrict__ y, long long planes, int spatial,
                            bool average) {
  const int lane = threadIdx.x % kWarp;
  for (long long plane : warp_stride(planes)) {
    const T* in = x + plane * spatial;
    float best = -INFINITY, sum = 0.0f;
    for (int i = lane; i < spatial; i += kWarp) {
      const float v = to_float(in[i]);
      best = fmaxf(best, v);
      sum += v;
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      best = fmaxf(best, __shfl_down_sync(0xffffffffu, best, offset));
      sum += __shfl_down_sync(0xffffffffu, sum, offset);
    }
    if (lane == 0) y[plane] = from_float<T>(average ? sum / static_cast<float>(spatial) : best);
  }
}

// The window of output position o on one axis, as in the forward: [begin, end) clipped to the input,
// and the extent an average divides by.
struct Span {
  int begin, end, divisor;
};

__device__ Span span(const Windows& p, int a, int o) {
  const int start = o * p.stride[a] - p.pad[a];
  const int padded_end = min(start + p.kernel[a], p.in[a] + p.pad[a]);
  const int begin = max(start, 0);
  const int end = min(padded_end, p.in[a]);
  return {begin, end, p.count_include_pad ? padded_end - start : end - begin};
}

// T: the storage type (precision.cuh); windows are reduced in float. A thread per output; channels-last
// (inference) with channels fastest, so that neighbouring threads read neighbouring channels at each tap.
template <class T, bool kChannelsLast>
__global__ void pool_windows(Windows p, const T* __restrict__ x, T* __restrict__ y) {
  for (long long i : grid_stride(p.outputs)) {
    const T* in;
    int position;
    long long step = 1;  // between neighbouring positions of a plane in x
    if constexpr (kChannelsLast) {
      const long long rest = i / p.channels;
      const long long image = rest / p.out_spatial;
      position = static_cast<int>(rest - image * p.out_spatial);
      in = x + image * p.in_spatial * p.channels + (i - rest * p.channels);
      step = p.channels;
    } else {
      const long long plane = i / p.out_spatial;
      position = static_cast<int>(i - plane * p.out_spatial);
      in = x + plane * p.in_spatial;
    }
    const int o[3] = {position / (p.out[1] * p.out[2]), position / p.out[2] % p.out[1], position % p.out[2]};
    Span s[3];
    for (int a = 0; a < 3; ++a) s[a] = span(p, a, o[a]);
    float best = -INFINITY, sum = 0.0f;
    for (int d = s[0].begin; d < s[0].end; ++d) {
      for (int h = s[1].begin; h < s[1].end; ++h) {
        for (int w = s[2].begin; w < s[2].end; ++w) {
          const float v = to_float(in[static_cast<long long>((d * p.in[1] + h) * p.in[2] + w) * step]);
          best = fmaxf(best, v);
          sum += v;
        }
      }
    }
    const int divisor = s[0].divisor * s[1].divisor * s[2].divisor;
    y[i] = from_float<T>(p.average ? sum / static_cast<float>(divisor) : best);
  }
}

// Channels-last 2-D windows with kVec channels of one output position per thread, each tap one 16-byte
// load: the scalar kernel above spent its time on index arithmetic (SqueezeNet's first max pooling at batch
// 256 in fp16 moved 0.4 TB/s). Index: 32-bit where every element offset fits.
template <class T, int kVec, class Index>
__global__ void pool_windows_packed(Windows p, const T* __restrict__ x, T* __restrict__ y) {
  const auto packs = static_cast<Index>(p.channels / kVec);
  const auto out_spatial = static_cast<Index>(p.out_spatial);
  for (long long at : grid_stride(p.outputs / kVec)) {
    const auto i = static_cast<Index>(at);
    const Index pixel = i / packs, pack = i - pixel * packs;
    const Index image = pixel / out_spatial;
    const auto position = static_cast<int>(pixel - image * out_spatial);
    const Span sh = span(p, 1, position / p.out[2]), sw = span(p, 2, position % p.out[2]);
    const T* in = x + image * static_cast<Index>(p.in_spatial) * static_cast<Index>(p.channels) + pack * kVec;
    float best[kVec], sum[kVec];
    for (int j = 0; j < kVec; ++j) {
      best[j] = -INFINITY;
      sum[j] = 0.0f;
    }
    for (int h = sh.begin; h < sh.end; ++h) {
      for (int w = sw.begin; w < sw.end; ++w) {
        const Pack<T, kVec> v =
            *reinterpret_cast<const Pack<T, kVec>*>(in + static_cast<Index>(h * p.in[2] + w) * p.channels);
        for (int j = 0; j < kVec; ++j) {
          const float f = to_float(v.v[j]);
          best[j] = fmaxf(best[j], f);
          sum[j] += f;
        }
      }
    }
    const auto divisor = static_cast<float>(sh.divisor * sw.divisor);
    Pack<T, kVec> out;
    for (int j = 0; j < kVec; ++j) out.v[j] = from_float<T>(p.average ? sum[j] / divisor : best[j]);
    *reinterpret_cast<Pack<T, kVec>*>(y + i * kVec) = out;
  }
}

// Global pooling channels-last: a thread per image and channel walks the plane.
template <class T>
__global__ void pool_planes_channels_last(const T* __restrict__ x, T* __restrict__ y, long long planes,
                                          int channels, int spatial, bool average) {
  for (long long plane : grid_stride(planes)) {
    const long long image = plane / channels;
    const T* in = x + image * spatial * channels + (plane - image * channels);
    float best = -INFINITY, sum = 0.0f;
    for (int i = 0; i < spatial; ++i) {
      const float v = to_float(in[static_cast<long long>(i) * channels]);
      best = fmaxf(best, v);
      sum += v;
    }
    y[plane] = from_float<T>(average ? sum / static_cast<float>(spatial) : best);
  }
}

// window_maxima and unpool_windows take Index, 32 bits where the tensor allows, and kPlanar, a 2-D pooling
// (axis 0 of the lifted three is 1 wide): both spare divisions per element.

// The plane of element i, and its position in the plane.
template <class Index>
__device__ Index plane_of(Index i, int spatial, int& position) {
  const Index plane = i / static_cast<Index>(spatial);
  position = static_cast<int>(i - plane * static_cast<Index>(spatial));
  return plane;
}

// Position `position` of a plane of extent `size` as three coordinates.
template <bool kPlanar>
__device__ void coordinates(int position, const int* size, int* at) {
  if constexpr (kPlanar) {
    at[0] = 0;
    at[1] = position / size[2];
    at[2] = position - at[1] * size[2];
  } else {
    at[0] = position / (size[1] * size[2]);
    at[1] = position / size[2] % size[1];
    at[2] = position % size[2];
  }
}

// The tap of a window's first maximum, ((d · kernel[1]) + h) · kernel[2] + w from the window's unclipped
// corner (NaNs compare false, as in the reference); with `y` (a training forward) the maximum too.
template <class T, class Index, bool kPlanar, class Tap>
__global__ void window_maxima(Windows p, Tap* __restrict__ best_of, const T* __restrict__ x,
                              T* __restrict__ y) {
  for (std::int64_t at : grid_stride(p.outputs)) {
    const auto i = static_cast<Index>(at);
    int position = 0;
    const Index plane = plane_of<Index>(i, p.out_spatial, position);
    int o[3];
    coordinates<kPlanar>(position, p.out, o);
    const Span s[3] = {kPlanar ? Span{0, 1, 1} : span(p, 0, o[0]), span(p, 1, o[1]), span(p, 2, o[2])};
    int corner[3];
    for (int a = 0; a < 3; ++a) corner[a] = o[a] * p.stride[a] - p.pad[a];
    const auto tap = [&](int d, int h, int w) {
      return ((d - corner[0]) * p.kernel[1] + h - corner[1]) * p.kernel[2] + w - corner[2];
    };
    const T* in = x + plane * static_cast<Index>(p.in_spatial);
    int best = (s[0].begin * p.in[1] + s[1].begin) * p.in[2] + s[2].begin;
    int best_tap = tap(s[0].begin, s[1].begin, s[2].begin);
    float best_value = to_float(in[best]);
    for (int d = s[0].begin; d < s[0].end; ++d) {
      for (int h = s[1].begin; h < s[1].end; ++h) {
        for (int w = s[2].begin; w < s[2].end; ++w) {
          const int index = (d * p.in[1] + h) * p.in[2] + w;
          const float v = to_float(in[index]);
          if (v > best_value) {
            best = index;
            best_tap = tap(d, h, w);
            best_value = v;
          }
        }
      }
    }
    best_of[i] = static_cast<Tap>(best_tap);
    if (y != nullptr) y[i] = in[best];
  }
}

// The windows covering input position v on one axis: o from first to last, where o · stride − pad <= v <
// o · stride − pad + kernel; clipping to the padded input never cuts off a position inside the input.
__device__ void covering(const Windows& p, int a, int v, int& first, int& last) {
  const int shifted = v + p.pad[a];
  first = shifted < p.kernel[a] ? 0 : (shifted - p.kernel[a]) / p.stride[a] + 1;
  last = min(shifted / p.stride[a], p.out[a] - 1);
}

// The gradient reaching an input position from the window at `window_at` (`o` its flat index among the
// plane's outputs, `tap` the position's tap in it): a share of the average, or the whole gradient where
// the position held the window's maximum.
template <bool kAverage, class T, class Tap>
__device__ float window_share(const Windows& p, const Tap* best_of, const T* dy, std::int64_t o,
                              const int* window_at, int tap) {
  if constexpr (kAverage) {
    const Span s[3] = {span(p, 0, window_at[0]), span(p, 1, window_at[1]), span(p, 2, window_at[2])};
    return to_float(dy[o]) / static_cast<float>(s[0].divisor * s[1].divisor * s[2].divisor);
  } else {
    return static_cast<int>(best_of[o]) == tap ? to_float(dy[o]) : 0.0f;
  }
}

// Backward over three axes: a thread per input element. best_of: window_maxima's taps for max pooling,
// unused for average pooling.
template <class T, class Index, bool kPlanar, bool kAverage, class Tap>
__global__ void unpool_windows(Windows p, long long inputs, const Tap* __restrict__ best_of,
                               const T* __restrict__ dy, T* __restrict__ dx) {
  for (std::int64_t step : grid_stride(inputs)) {
    const auto i = static_cast<Index>(step);
    int position = 0;
    const Index plane = plane_of<Index>(i, p.in_spatial, position);
    int at[3];
    coordinates<kPlanar>(position, p.in, at);
    int first[3] = {0, 0, 0}, last[3] = {0, 0, 0};
    for (int a = kPlanar ? 1 : 0; a < 3; ++a) covering(p, a, at[a], first[a], last[a]);
    const Index plane_outputs = plane * static_cast<Index>(p.out_spatial);
    float sum = 0.0f;
    for (int od = first[0]; od <= last[0]; ++od) {
      for (int oh = first[1]; oh <= last[1]; ++oh) {
        for (int ow = first[2]; ow <= last[2]; ++ow) {
          const int window_at[3] = {od, oh, ow};
          const int tap =
              ((at[0] - od * p.stride[0] + p.pad[0]) * p.kernel[1] + at[1] - oh * p.stride[1] + p.pad[1]) *
                  p.kernel[2] +
              at[2] - ow * p.stride[2] + p.pad[2];
          sum += window_share<kAverage>(
              p, best_of, dy, plane_outputs + static_cast<Index>((od * p.out[1] + oh) * p.out[2] + ow),
              window_at, tap);
        }
      }
    }
    dx[i] = from_float<T>(to_float(dx[i]) + sum);
  }
}

// Backward of a 2-D pooling whose windows overlap at most pairwise on each axis (kernel <= 2 · stride:
// ResNet's and NIN's 3 x 3 stride-2 poolings), a thread per kVec consecutive inputs of a row: the row's
// gradients read and written as one access, and each element's at most 2 x 2 covering windows visited in
// fixed, unrolled loops, so that a thread has all its loads in flight at once. A thread per element with
// loops of variable length had kept so few bytes in flight that ResNet-18's stem pooling backward took
// 0.9 ms of a 11 ms fp16 training step, ten times its memory traffic at an H200's bandwidth.
template <class T, bool kAverage, class Tap, int kVec>
__global__ void unpool_pairs(Windows p, long long packs, const Tap* __restrict__ best_of,
                             const T* __restrict__ dy, T* __restrict__ dx) {
  const int row_packs = p.in[2] / kVec;
  for (long long pack : grid_stride(packs)) {
    const long long row = pack / row_packs;  // plane · in[1] + h
    const int w0 = static_cast<int>(pack - row * row_packs) * kVec;
    const long long plane = row / p.in[1];
    const int h = static_cast<int>(row - plane * p.in[1]);
    int first_h = 0, last_h = 0;
    covering(p, 1, h, first_h, last_h);
    const T* plane_dy = dy + plane * p.out_spatial;
    const Tap* plane_best = kAverage ? best_of : best_of + plane * p.out_spatial;
    T* at = dx + row * p.in[2] + w0;  // kVec divides in[2]: whole packs
    Pack<T, kVec> grads = load_pack<kVec>(at, kVec);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const int w = w0 + j;
      int first_w = 0, last_w = 0;
      covering(p, 2, w, first_w, last_w);
      float sum = 0.0f;
#pragma unroll
      for (int a = 0; a < 2; ++a) {
        const int oh = first_h + a;
#pragma unroll
        for (int b = 0; b < 2; ++b) {
          const int ow = first_w + b;
          if (oh > last_h || ow > last_w) continue;
          const int window_at[3] = {0, oh, ow};
          const int tap = (h - oh * p.stride[1] + p.pad[1]) * p.kernel[2] + w - ow * p.stride[2] + p.pad[2];
          sum += window_share<kAverage>(p, plane_best, plane_dy, oh * p.out[2] + ow, window_at, tap);
        }
      }
      grads.v[j] = from_float<T>(to_float(grads.v[j]) + sum);
    }
    store_pack<kVec>(at, grads, kVec);
  }
}

// Whether an input position is covered by at most two windows on each of the last two axes.
bool pairwise_overlap(const Windows& w) {
  return w.kernel[1] <= 2 * w.stride[1] && w.kernel[2] <= 2 * w.stride[2];
}

// Whether a window's taps fit the byte window_maxima keeps per window.
bool byte_taps(const Windows& w) { return 1LL * w.kernel[0] * w.kernel[1] * w.kernel[2] <= 256; }

std::size_t maxima_bytes(const Windows& w) {
  return static_cast<std::size_t>(w.outputs) * (byte_taps(w) ? sizeof(std::uint8_t) : sizeof(int));
}

// `visit` with the index type, planarity and tap type of the windows' kernels: the fastest variant
// that fits.
template <typename Visit>
void with_window_variant(const Windows& w, Visit&& visit) {
  const bool planar = w.in[0] == 1 && w.out[0] == 1 && w.kernel[0] == 1 && w.pad[0] == 0;
  with_index_type(std::max<long long>(w.planes * w.in_spatial, w.outputs), [&](auto index) {
    const auto with_taps = [&](auto planarity) {
      if (byte_taps(w)) {
        visit(index, planarity, std::uint8_t{});
      } else {
        visit(index, planarity, int{});
      }
    };
    if (planar) {
      with_taps(std::true_type{});
    } else {
      with_taps(std::false_type{});
    }
  });
}

template <class T>
__global__ void unpool_plane_averages(const T* __restrict__ dy, T* __restrict__ dx, long long inputs,
                                      int spatial) {
  for (long long i : grid_stride(inputs)) {
    dx[i] = from_float<T>(to_float(dx[i]) + to_float(dy[i / spatial]) / static_cast<float>(spatial));
  }
}

// A thread per plane, scanning it in order as the reference does: the first maximum, NaNs included.
template <class T>
__global__ void unpool_plane_maxima(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx,
                                    long long planes, int spatial) {
  for (long long plane : grid_stride(planes)) {
    const T* in = x + plane * spatial;
    int best = 0;
    float best_value = to_float(in[0]);
    for (int i = 1; i < spatial; ++i) {
      const float v = to_float(in[i]);
      if (v > best_value) {
        best = i;
        best_value = v;
      }
    }
    const long long at = plane * spatial + best;
    dx[at] = from_float<T>(to_float(dx[at]) + to_float(dy[plane]));
  }
}

// The forward in storage type T.
template <class T>
void pool(StreamContext& context, const Windows& windows, bool global, bool channels_last,
          const Tensor& input, Tensor& output) {
  if (windows.outputs == 0) return;
  const T* x = static_cast<const T*>(input.raw());
  T* y = static_cast<T*>(output.raw());
  if (global && channels_last) {
    launch(context, windows.planes, pool_planes_channels_last<T>, x, y, windows.planes, windows.channels,
           windows.in_spatial, windows.average);
  } else if (global) {
    launch(context, windows.outputs * kWarp, pool_planes<T>, x, y, windows.outputs, windows.in_spatial,
           windows.average);
  } else if (channels_last && windows.in[0] == 1 && windows.channels % kWidePack<T> == 0 &&
             wide_aligned({x, y})) {
    with_index_type(std::max<long long>(windows.planes * windows.in_spatial, windows.outputs),
                    [&](auto index) {
                      launch(context, windows.outputs / kWidePack<T>,
                             pool_windows_packed<T, kWidePack<T>, decltype(index)>, windows, x, y);
                    });
  } else if (channels_last) {
    launch(context, windows.outputs, pool_windows<T, true>, windows, x, y);
  } else {
    launch(context, windows.outputs, pool_windows<T, false>, windows, x, y);
  }
}

// T: the storage type (float, or __half / __nv_bfloat16 for make_lowp_pooling).
template <class T>
class PoolingKernel final : public CudaKernel {
 public:
  // `training`: max pooling keeps each window's maximum from forward for backward. `channels_last`: x and
  // y stored N, H, W, C (inference plans).
  PoolingKernel(const Windows& windows, bool global, bool training, StreamContext& context,
                bool channels_last = false)
      : CudaKernel(context), windows_(windows), global_(global), channels_last_(channels_last) {
    if (training && !global && !windows.average && windows.outputs > 0) {
      maxima_ = allocate(maxima_bytes(windows), context.device(), "the window maxima of a max pooling");
    }
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (maxima_ == nullptr) {
      pool<T>(context_, windows_, global_, channels_last_, inputs[0], outputs[0]);
      return;
    }
    with_window_variant(windows_, [&](auto index, auto planar, auto tap) {
      using Tap = decltype(tap);
      launch(context_, windows_.outputs, window_maxima<T, decltype(index), decltype(planar)::value, Tap>,
             windows_, static_cast<Tap*>(maxima_.get()), static_cast<const T*>(inputs[0].raw()),
             static_cast<T*>(outputs[0].raw()));
    });
  }

  bool has_fast_backward() const override { return !channels_last_; }
  void backward(const Layer& layer, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    if (channels_last_)
      throw UnsupportedError("layer '" + layer.name() + "': a channels-last pooling has no backward");
    const long long planes = windows_.planes;
    const long long input_count = planes * windows_.in_spatial;
    if (!input_grads[0].defined() || input_count == 0) return;
    const auto* x = static_cast<const T*>(inputs[0].raw());
    const auto* dy = static_cast<const T*>(output_grads[0].raw());
    auto* dx = static_cast<T*>(input_grads[0].raw());
    if (global_ && windows_.average) {
      launch(context_, input_count, unpool_plane_averages<T>, dy, dx, input_count, windows_.in_spatial);
    } else if (global_) {
      launch(context_, planes, unpool_plane_maxima<T>, x, dy, dx, planes, windows_.in_spatial);
    } else {
      // Max pooling: the maxima forward kept, or (a kernel made for inference) found now in the workspace.
      void* maxima = maxima_.get();
      const bool find = !windows_.average && maxima == nullptr;
      if (find) {
        context_.reserve_workspace(maxima_bytes(windows_));
        maxima = context_.workspace();
      }
      with_window_variant(windows_, [&](auto index, auto planar, auto tap) {
        using Index = decltype(index);
        using Tap = decltype(tap);
        auto* best_of = static_cast<Tap*>(maxima);
        if (find)
          launch(context_, windows_.outputs, window_maxima<T, Index, decltype(planar)::value, Tap>, windows_,
                 best_of, x, nullptr);
        const auto unpool = [&](auto average) {
          constexpr bool kAverage = decltype(average)::value;
          const long long rows = windows_.planes * windows_.in[1];
          const auto pairs = [&](auto width) {
            constexpr int kVec = decltype(width)::value;
            const long long packs = rows * (windows_.in[2] / kVec);
            launch(context_, packs, unpool_pairs<T, kAverage, Tap, kVec>, windows_, packs, best_of, dy, dx);
          };
          if (!decltype(planar)::value || !pairwise_overlap(windows_)) {
            launch(context_, input_count, unpool_windows<T, Index, decltype(planar)::value, kAverage, Tap>,
                   windows_, input_count, best_of, dy, dx);
          } else if (windows_.in[2] % kWidePack<T> == 0 && wide_aligned({dx})) {
            pairs(std::integral_constant<int, kWidePack<T>>{});
          } else {
            pairs(std::integral_constant<int, 1>{});
          }
        };
        if (windows_.average) {
          unpool(std::true_type{});
        } else {
          unpool(std::false_type{});
        }
      });
    }
  }

  const char* name() const override {
    return channels_last_ ? (global_ ? "cuda-global-nhwc" : "cuda-nhwc") : (global_ ? "cuda-global" : "cuda");
  }
  // Averages spread the output gradient alone, and a training max pooling's windows kept their maxima:
  // only a global max pooling and a max pooling made for inference look at the input again.
  bool backward_reads_inputs() const override { return !windows_.average && maxima_ == nullptr; }
  std::size_t workspace_bytes() const override { return maxima_ ? maxima_bytes(windows_) : 0; }

 private:
  Windows windows_;
  bool global_;
  bool channels_last_;
  std::shared_ptr<void> maxima_;  // training max pooling: each window's maximum, from the last forward
};

// The layer's windows lifted to three axes; false where no kernel here runs it (more spatial axes
// than three, or sizes past int).
bool windows_of(const Layer& layer, const std::vector<Shape>& inputs, Windows& w, bool& global) {
  const auto& pooling = static_cast<const PoolingLayer&>(layer);
  const PoolGeometry g = pooling.geometry(inputs[0]);
  const int axes = g.axes();
  if (axes < 1 || axes > 3) return false;
  if (dims_product(g.in_size) > std::numeric_limits<int>::max()) return false;
  w = Windows{};
  for (int a = 0; a < 3; ++a) {
    w.in[a] = w.out[a] = w.kernel[a] = w.stride[a] = 1;
    w.pad[a] = 0;
  }
  global = true;
  for (int a = 0; a < axes; ++a) {
    const auto from = static_cast<std::size_t>(a);
    const int to = 3 - axes + a;
    w.in[to] = static_cast<int>(g.in_size[from]);
    w.out[to] = static_cast<int>(g.out_size[from]);
    w.kernel[to] = static_cast<int>(g.kernel[from]);
    w.stride[to] = static_cast<int>(g.stride[from]);
    w.pad[to] = static_cast<int>(g.pad[from]);
    global = global && g.kernel[from] == g.in_size[from] && g.pad[from] == 0 && g.out_size[from] == 1;
  }
  w.in_spatial = w.in[0] * w.in[1] * w.in[2];
  w.out_spatial = w.out[0] * w.out[1] * w.out[2];
  w.planes = g.batch * g.channels;
  if (g.channels > std::numeric_limits<int>::max()) return false;
  w.channels = static_cast<int>(g.channels);
  w.outputs = w.planes * w.out_spatial;
  w.average = pooling.method() == PoolMethod::average;
  w.count_include_pad = pooling.count_include_pad();
  return true;
}

}  // namespace

std::unique_ptr<Kernel> make_pooling(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context) {
  Windows w;
  bool global = false;
  // No kernel: the executor names the layer.
  if (!windows_of(layer, inputs, w, global)) return nullptr;
  return std::make_unique<PoolingKernel<float>>(w, global, layer.training(), context);
}

// Channels-last pooling for inference plans.
std::unique_ptr<Kernel> make_nhwc_pooling(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                          StreamContext& context) {
  Windows w;
  bool global = false;
  if (inputs[0].rank() != 4 || !windows_of(layer, inputs, w, global)) return nullptr;
  std::unique_ptr<Kernel> kernel;
  with_storage_type(dtype, "Pooling", [&](auto type) {
    kernel = std::make_unique<PoolingKernel<decltype(type)>>(w, global, false, context, true);
  });
  return kernel;
}

std::unique_ptr<Kernel> make_lowp_pooling(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                          StreamContext& context) {
  Windows w;
  bool global = false;
  if (!windows_of(layer, inputs, w, global)) return nullptr;
  std::unique_ptr<Kernel> kernel;
  with_storage_type(dtype, "Pooling", [&](auto type) {
    kernel = std::make_unique<PoolingKernel<decltype(type)>>(w, global, layer.training(), context);
  });
  return kernel;
}

}  // namespace espresso::cuda
