#include <cstdint>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/channel_packs.cuh"
#include "backends/cuda/channel_reduce.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"

namespace espresso::cuda {
namespace {

// T: the storage type of x and y (precision.cuh); the parameters and the arithmetic are float. Index:
// 32 bits where the tensor allows (the division per pack is several times cheaper).
template <class T, class Index, bool kScale, bool kShift, int kVec>
__global__ void affine(const T* x, const float* scale, const float* shift, T* y, Index n, Index channels,
                       Index inner) {
  for_each_pack<kVec>(n, channels, inner, [&](Index i, int count, const Index* channel) {
    Pack<T, kVec> v = load_pack<kVec>(x + i, count);
    for (int j = 0; j < kVec; ++j) {
      float f = to_float(v.v[j]);
      if constexpr (kScale) f *= scale[channel[j]];
      if constexpr (kShift) f += shift[channel[j]];
      v.v[j] = from_float<T>(f);
    }
    store_pack<kVec>(y + i, v, count);
  });
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
    with_pack_width<T>({x, y}, [&](auto width) {
      using Index = decltype(index);
      constexpr int kVec = decltype(width)::value;
      // One instance per combination, so that the per-element loop carries no branch.
      const auto kernel = scale == nullptr   ? &affine<T, Index, false, true, kVec>
                          : shift == nullptr ? &affine<T, Index, true, false, kVec>
                                             : &affine<T, Index, true, true, kVec>;
      launch(context, (n + kVec - 1) / kVec, kernel, x, scale, shift, y, static_cast<Index>(n),
             static_cast<Index>(extent.channels), static_cast<Index>(extent.inner));
    });
  });
}

// kStrided: out is a slice of a larger tensor, `out_stride` elements from one image to the next (packs of
// one element: a pack may straddle two images).
template <class T, class Index, bool kShift, bool kResidual, bool kStrided, int kVec>
__global__ void epilogue(const T* y, const float* shift, const T* residual, T* out, float lo, float hi,
                         Index n, Index channels, Index inner, Index out_stride) {
  static_assert(!kStrided || kVec == 1);
  for_each_pack<kVec>(n, channels, inner, [&](Index i, int count, const Index* channel) {
    const Pack<T, kVec> ys = load_pack<kVec>(y + i, count);
    Pack<T, kVec> rs{}, outs;
    if constexpr (kResidual) rs = load_pack<kVec>(residual + i, count);
    for (int j = 0; j < kVec; ++j) {
      float v = to_float(ys.v[j]);
      if constexpr (kShift) v += shift[channel[j]];
      if constexpr (kResidual) v += to_float(rs.v[j]);
      outs.v[j] = from_float<T>(fminf(fmaxf(v, lo), hi));
    }
    Index o = i;
    if constexpr (kStrided) {
      const Index image = i / (channels * inner);
      o = i + image * (out_stride - channels * inner);
    }
    store_pack<kVec>(out + o, outs, count);
  });
}

template <class T, class Index, bool kStrided, int kVec>
auto epilogue_variant(bool shift, bool residual) {
  return shift ? (residual ? &epilogue<T, Index, true, true, kStrided, kVec>
                           : &epilogue<T, Index, true, false, kStrided, kVec>)
               : (residual ? &epilogue<T, Index, false, true, kStrided, kVec>
                           : &epilogue<T, Index, false, false, kStrided, kVec>);
}

template <class T>
void typed_epilogue(StreamContext& context, const T* y, const float* shift, const T* residual, T* out,
                    float lo, float hi, std::int64_t out_stride, const ChannelExtent& extent) {
  const std::int64_t n = extent.outer * extent.channels * extent.inner;
  const std::int64_t per_image = extent.channels * extent.inner;
  const bool strided = out_stride != 0 && out_stride != per_image;
  with_index_type(strided ? extent.outer * out_stride : n, [&](auto index) {
    using Index = decltype(index);
    const auto run = [&](auto kernel, int vec) {
      launch(context, (n + vec - 1) / vec, kernel, y, shift, residual, out, lo, hi, static_cast<Index>(n),
             static_cast<Index>(extent.channels), static_cast<Index>(extent.inner),
             static_cast<Index>(out_stride));
    };
    if (strided) {
      run(epilogue_variant<T, Index, true, 1>(shift != nullptr, residual != nullptr), 1);
      return;
    }
    with_pack_width<T>({y, residual, out}, [&](auto width) {
      constexpr int kVec = decltype(width)::value;
      run(epilogue_variant<T, Index, false, kVec>(shift != nullptr, residual != nullptr), kVec);
    });
  });
}

template <class T, class Index, int kVec>
__global__ void scale_add(const T* dy, const float* scale, T* dx, Index n, Index channels, Index inner) {
  for_each_pack<kVec>(n, channels, inner, [&](Index i, int count, const Index* channel) {
    const Pack<T, kVec> dys = load_pack<kVec>(dy + i, count);
    Pack<T, kVec> dxs = load_pack<kVec>(dx + i, count);
    for (int j = 0; j < kVec; ++j) {
      const float g = to_float(dys.v[j]);
      dxs.v[j] = from_float<T>(to_float(dxs.v[j]) + (scale != nullptr ? g * scale[channel[j]] : g));
    }
    store_pack<kVec>(dx + i, dxs, count);
  });
}

// Σ dy·x and Σ dy of a channel (reduce_channels); x null: the first stays 0.
template <class T>
struct ParameterTerms {
  static constexpr int kWide = kWidePack<T>;
  const T* dy;
  const T* x;
  bool wide() const { return wide_aligned({dy, x}); }
  template <int kVec>
  __device__ SumPair<float> pack(std::int64_t i, std::int64_t) const {
    const Pack<T, kVec> gs = load_pack<kVec>(dy + i, kVec);
    Pack<T, kVec> xs{};
    if (x != nullptr) xs = load_pack<kVec>(x + i, kVec);
    SumPair<float> sums{0.0f, 0.0f};
    for (int j = 0; j < kVec; ++j) {
      const float g = to_float(gs.v[j]);
      sums += {g * to_float(xs.v[j]), g};
    }
    return sums;
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
      with_pack_width<T>({dy, dx}, [&](auto width) {
        using Index = decltype(index);
        constexpr int kVec = decltype(width)::value;
        launch(context, (n + kVec - 1) / kVec, scale_add<T, Index, kVec>, static_cast<const T*>(dy), scale,
               static_cast<T*>(dx), static_cast<Index>(n), static_cast<Index>(extent.channels),
               static_cast<Index>(extent.inner));
      });
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
