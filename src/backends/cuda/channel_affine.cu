#include <cstdint>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/channel_reduce.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"

namespace espresso::cuda {
namespace {

// T: the storage type of x and y (precision.cuh); the parameters and the arithmetic are float. Index:
// 32 bits where the tensor allows (the division per element is several times cheaper).
template <class T, class Index, bool kScale, bool kShift>
__global__ void affine(const T* x, const float* scale, const float* shift, T* y, Index n, Index channels,
                       Index inner) {
  for (std::int64_t at : grid_stride(n)) {
    const auto i = static_cast<Index>(at);
    const Index c = i / inner % channels;
    float v = to_float(x[i]);
    if constexpr (kScale) v *= scale[c];
    if constexpr (kShift) v += shift[c];
    y[i] = from_float<T>(v);
  }
}

template <class T>
void typed_affine(StreamContext& context, const T* x, const float* scale, const float* shift, T* y,
                  const ChannelExtent& extent) {
  const std::int64_t n = extent.outer * extent.channels * extent.inner;
  if (n == 0) return;
  if (scale == nullptr && shift == nullptr) {
    if (x != y) {
      ESPRESSO_CUDA_CHECK(cudaMemcpyAsync(y, x, static_cast<std::size_t>(n) * sizeof(T),
                                          cudaMemcpyDeviceToDevice, context.stream()));
    }
    return;
  }
  with_index_type(n, [&](auto index) {
    using Index = decltype(index);
    // One instance per combination, so that the per-element loop carries no branch.
    const auto kernel = scale == nullptr   ? &affine<T, Index, false, true>
                        : shift == nullptr ? &affine<T, Index, true, false>
                                           : &affine<T, Index, true, true>;
    launch(context, n, kernel, x, scale, shift, y, static_cast<Index>(n), static_cast<Index>(extent.channels),
           static_cast<Index>(extent.inner));
  });
}

// kStrided: out is a slice of a larger tensor, `out_stride` elements from one image to the next.
template <class T, class Index, bool kShift, bool kResidual, bool kStrided>
__global__ void epilogue(const T* y, const float* shift, const T* residual, T* out, float lo, float hi,
                         Index n, Index channels, Index inner, Index out_stride) {
  for (std::int64_t at : grid_stride(n)) {
    const auto i = static_cast<Index>(at);
    float v = to_float(y[i]);
    if constexpr (kShift) v += shift[i / inner % channels];
    if constexpr (kResidual) v += to_float(residual[i]);
    Index o = i;
    if constexpr (kStrided) {
      const Index image = i / (channels * inner);
      o = i + image * (out_stride - channels * inner);
    }
    out[o] = from_float<T>(fminf(fmaxf(v, lo), hi));
  }
}

template <class T, class Index, bool kStrided>
auto epilogue_variant(bool shift, bool residual) {
  return shift ? (residual ? &epilogue<T, Index, true, true, kStrided>
                           : &epilogue<T, Index, true, false, kStrided>)
               : (residual ? &epilogue<T, Index, false, true, kStrided>
                           : &epilogue<T, Index, false, false, kStrided>);
}

template <class T>
void typed_epilogue(StreamContext& context, const T* y, const float* shift, const T* residual, T* out,
                    float lo, float hi, std::int64_t out_stride, const ChannelExtent& extent) {
  const std::int64_t n = extent.outer * extent.channels * extent.inner;
  const std::int64_t per_image = extent.channels * extent.inner;
  const bool strided = out_stride != 0 && out_stride != per_image;
  with_index_type(strided ? extent.outer * out_stride : n, [&](auto index) {
    using Index = decltype(index);
    const auto kernel = strided ? epilogue_variant<T, Index, true>(shift != nullptr, residual != nullptr)
                                : epilogue_variant<T, Index, false>(shift != nullptr, residual != nullptr);
    launch(context, n, kernel, y, shift, residual, out, lo, hi, static_cast<Index>(n),
           static_cast<Index>(extent.channels), static_cast<Index>(extent.inner),
           static_cast<Index>(out_stride));
  });
}

template <class T, class Index>
__global__ void scale_add(const T* dy, const float* scale, T* dx, Index n, Index channels, Index inner) {
  for (std::int64_t at : grid_stride(n)) {
    const auto i = static_cast<Index>(at);
    const float g = to_float(dy[i]);
    dx[i] = from_float<T>(to_float(dx[i]) + (scale != nullptr ? g * scale[i / inner % channels] : g));
  }
}

// Σ dy·x and Σ dy of a channel (reduce_channels); x null: the first stays 0.
template <class T>
struct ParameterTerms {
  const T* dy;
  const T* x;
  __device__ SumPair<float> operator()(std::int64_t i, std::int64_t) const {
    const float g = to_float(dy[i]);
    return {x != nullptr ? g * to_float(x[i]) : 0.0f, g};
  }
};

struct AddParameterGrads {
  float* dscale;
  float* dshift;
  __device__ void operator()(std::int64_t c, SumPair<float> sums) const {
    if (dscale != nullptr) dscale[c] += sums.first;
    if (dshift != nullptr) dshift[c] += sums.second;
  }
};

}  // namespace

void channel_affine(StreamContext& context, const float* x, const float* scale, const float* shift, float* y,
                    const ChannelExtent& extent) {
  typed_affine(context, x, scale, shift, y, extent);
}

void channel_affine(StreamContext& context, DType dtype, const void* x, const float* scale,
                    const float* shift, void* y, const ChannelExtent& extent) {
  with_storage_type(dtype, "channel affine", [&](auto type) {
    using T = decltype(type);
    typed_affine(context, static_cast<const T*>(x), scale, shift, static_cast<T*>(y), extent);
  });
}

void channel_epilogue(StreamContext& context, DType dtype, void* y, const float* shift,
                      const Epilogue& epilogue, const ChannelExtent& extent) {
  const std::int64_t n = extent.outer * extent.channels * extent.inner;
  if (n == 0) return;
  with_storage_type(dtype, "convolution epilogue", [&](auto type) {
    using T = decltype(type);
    auto* typed = static_cast<T*>(y);
    const auto* residual = static_cast<const T*>(epilogue.residual);
    T* out = epilogue.destination != nullptr ? static_cast<T*>(epilogue.destination) : typed;
    typed_epilogue<T>(context, typed, shift, residual, out, epilogue.lo, epilogue.hi,
                      epilogue.destination_image_stride, extent);
  });
}

void channel_scale_add(StreamContext& context, DType dtype, const void* dy, const float* scale, void* dx,
                       const ChannelExtent& extent) {
  const std::int64_t n = extent.outer * extent.channels * extent.inner;
  if (n == 0) return;
  with_storage_type(dtype, "channel scale gradient", [&](auto type) {
    using T = decltype(type);
    with_index_type(n, [&](auto index) {
      using Index = decltype(index);
      launch(context, n, scale_add<T, Index>, static_cast<const T*>(dy), scale, static_cast<T*>(dx),
             static_cast<Index>(n), static_cast<Index>(extent.channels), static_cast<Index>(extent.inner));
    });
  });
}

void channel_parameter_grads(StreamContext& context, DType dtype, const void* dy, const void* x,
                             float* dscale, float* dshift, const ChannelExtent& extent) {
  if ((dscale == nullptr && dshift == nullptr) || extent.outer * extent.channels * extent.inner == 0) return;
  with_storage_type(dtype, "channel parameter gradients", [&](auto type) {
    using T = decltype(type);
    const auto* typed_x = dscale != nullptr ? static_cast<const T*>(x) : nullptr;
    reduce_channels<SumPair<float>>(context, extent, ParameterTerms<T>{static_cast<const T*>(dy), typed_x},
                                    AddParameterGrads{dscale, dshift});
  });
}

}  // namespace espresso::cuda
