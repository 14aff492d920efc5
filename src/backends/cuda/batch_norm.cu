// BatchNorm on the GPU. With stored statistics it is a per-channel affine map (channel_affine.h).
// With batch statistics (training) each channel's Σ x and Σ x² are reduced in double
// (channel_reduce.cuh) and folded into an affine map and the running blobs; backward reduces Σ dy and
// Σ dy·y the same way and applies the input gradient as one more per-channel linear map. Both maps are
// float: against the reference's double (x − μ)/σ they lose about |μ|/σ float ulps (within the harness's
// tolerance for activations whose mean lies within a few hundred σ of zero).
// In training the kernel can take over the Scale (and ReLU) after it (Kernel::fuse_training_scale):
// forward writes the normalised y and z = max(γ·y + β, 0) in one pass, backward sums the Scale's
// gradients and its own from dz and y in one reduction and writes dx in one more pass (5 passes over
// the channel's tensors for the three layers instead of 9, forward and backward).
// In fp16 / bf16 (mixed precision training too) x, y, z and their gradients are stored in that type
// (T below); the statistics, the per-channel maps, the sums and the Scale's parameters stay fp32.
#include <cstdint>
#include <type_traits>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/channel_packs.cuh"
#include "backends/cuda/channel_reduce.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"
#include "layers/batch_norm.h"

namespace espresso::cuda {
namespace {

// The stored statistics as y = x · multiplier + offset, computed as BatchNormLayer::affine does
// (unfused, so that the values are the CPU's to the bit).
__global__ void stored_affine(const float* __restrict__ mean, const float* __restrict__ variance,
                              const float* __restrict__ stored_factor, float eps,
                              float* __restrict__ multiplier, float* __restrict__ offset,
                              std::int64_t channels) {
  const float factor = *stored_factor == 0.0f ? 0.0f : 1.0f / *stored_factor;
  for (std::int64_t c : grid_stride(channels)) {
    multiplier[c] = 1.0f / sqrtf(__fadd_rn(__fmul_rn(variance[c], factor), eps));
    offset[c] = -mean[c] * factor * multiplier[c];
  }
}

// The blobs that batch statistics are folded into; all null when they are not updated.
struct RunningBlobs {
  float* mean = nullptr;
  float* variance = nullptr;
  float* factor = nullptr;
};

// Σ x and Σ x² of a channel, in double (reduce_channels).
template <class T>
struct Moments {
  static constexpr int kWide = kWidePack<T>;
  const T* x;
  bool wide() const { return wide_aligned({x}); }
  template <int kVec>
  __device__ SumPair<double> pack(std::int64_t i, std::int64_t) const {
    const Pack<T, kVec> xs = load_pack<kVec>(x + i, kVec);
    SumPair<double> sums{0.0, 0.0};
    for (int j = 0; j < kVec; ++j) {
      const double v = to_float(xs.v[j]);
      sums += {v, v * v};
    }
    return sums;
  }
};

// The batch mean μ and biased variance σ² of a channel as y = x · multiplier + offset, multiplier =
// 1 / sqrt(σ² + eps), offset = −μ · multiplier; then Caffe's moving averages: mean = mean·f + μ,
// var = var·f + m/(m−1)·σ², s = s·f + 1.
struct FoldStatistics {
  double count;
  float eps, fraction;
  RunningBlobs running;
  float* multiplier;
  float* offset;
  __device__ void operator()(std::int64_t c, SumPair<double> sums) const {
    const double mean = sums.first / count;
    const double variance = fmax(sums.second / count - mean * mean, 0.0);
    const double inverse = 1.0 / sqrt(variance + eps);
    multiplier[c] = static_cast<float>(inverse);
    offset[c] = static_cast<float>(-mean * inverse);
    if (running.mean != nullptr) {
      const double unbiased = count > 1 ? count / (count - 1) : 1.0;
      // The products stay in float, as in the reference.
      running.mean[c] = static_cast<float>(running.mean[c] * fraction + mean);
      running.variance[c] = static_cast<float>(running.variance[c] * fraction + unbiased * variance);
      // Unfused, to round as the CPU does.
      if (c == 0) *running.factor = __fadd_rn(__fmul_rn(*running.factor, fraction), 1.0f);
    }
  }
};

// A Scale (and ReLU) fused after the BatchNorm: z = γ·y + β, then max(z, 0) when `relu`. The same
// fmaf in forward and backward, so that backward finds the very signs forward clamped.
struct FusedScale {
  const float* scale = nullptr;  // null: nothing fused
  const float* bias = nullptr;   // null: no bias term
  float* scale_grad = nullptr;
  float* bias_grad = nullptr;
  bool relu = false;
  __device__ float apply(float y, std::int64_t c) const {
    return bias != nullptr ? fmaf(scale[c], y, bias[c]) : scale[c] * y;
  }
  // The gradient reaching the Scale's input from dz: dz where the ReLU passed (γ aside).
  __device__ float masked(float dz, float y, std::int64_t c) const {
    return relu && !(apply(y, c) > 0.0f) ? 0.0f : dz;
  }
};

template <class T, class Index, bool kRelu, int kVec>  // with_index_type, with_pack_width
__global__ void normalize_scale(const T* __restrict__ x, const float* __restrict__ multiplier,
                                const float* __restrict__ offset, FusedScale fused, T* __restrict__ y,
                                T* __restrict__ z, Index n, Index channels, Index inner) {
  for_each_pack<kVec>(n, channels, inner, [&](Index i, int count, const Index* channel) {
    const Pack<T, kVec> xs = load_pack<kVec>(x + i, count);
    Pack<T, kVec> ys, zs;
    for (int j = 0; j < kVec; ++j) {
      const Index c = channel[j];
      ys.v[j] = from_float<T>(fmaf(to_float(xs.v[j]), multiplier[c], offset[c]));
      // From y as stored (rounded to T), which is what backward reads to find the signs.
      const float scaled = fused.apply(to_float(ys.v[j]), c);
      zs.v[j] = from_float<T>(kRelu ? fmaxf(scaled, 0.0f) : scaled);
    }
    store_pack<kVec>(y + i, ys, count);
    store_pack<kVec>(z + i, zs, count);
  });
}

// Σ g and Σ g·y of a channel, in double: g = dy, or with a fused Scale the gradient that reaches the
// Scale's input divided by γ (FusedScale::masked).
template <class T>
struct GradientTerms {
  static constexpr int kWide = kWidePack<T>;
  const T* dy;
  const T* y;
  FusedScale fused;
  bool wide() const { return wide_aligned({dy, y}); }
  template <int kVec>
  __device__ SumPair<double> pack(std::int64_t i, std::int64_t c) const {
    const Pack<T, kVec> dys = load_pack<kVec>(dy + i, kVec), ys = load_pack<kVec>(y + i, kVec);
    SumPair<double> sums{0.0, 0.0};
    for (int j = 0; j < kVec; ++j) {
      const float dyj = to_float(dys.v[j]), yj = to_float(ys.v[j]);
      const double g = fused.scale != nullptr ? fused.masked(dyj, yj, c) : dyj;
      sums += {g, g * yj};
    }
    return sums;
  }
};

// dx = (dy − mean(dy) − y · mean(dy · y)) / sqrt(σ² + eps) as dx = g · gain + y · slope + shift; with a
// fused Scale dy = γ·g, whose sums are also the Scale's gradients: dγ += Σ g·y, dβ += Σ g.
struct FoldGradient {
  double count;
  const float* multiplier;
  FusedScale fused;
  float* gain;
  float* slope;
  float* shift;
  __device__ void operator()(std::int64_t c, SumPair<double> sums) const {
    double factor = multiplier[c];
    if (fused.scale != nullptr) {
      factor *= fused.scale[c];
      fused.scale_grad[c] += static_cast<float>(sums.second);
      if (fused.bias_grad != nullptr) fused.bias_grad[c] += static_cast<float>(sums.first);
    }
    gain[c] = static_cast<float>(factor);
    slope[c] = static_cast<float>(-sums.second / count * factor);
    shift[c] = static_cast<float>(-sums.first / count * factor);
  }
};

template <class T, class Index, bool kFused, int kVec>  // with_index_type, with_pack_width
__global__ void batch_input_grad(const T* __restrict__ dy, const T* __restrict__ y, FusedScale fused,
                                 const float* __restrict__ gain, const float* __restrict__ slope,
                                 const float* __restrict__ shift, T* __restrict__ dx, Index n, Index channels,
                                 Index inner) {
  for_each_pack<kVec>(n, channels, inner, [&](Index i, int count, const Index* channel) {
    const Pack<T, kVec> dys = load_pack<kVec>(dy + i, count), ys = load_pack<kVec>(y + i, count);
    Pack<T, kVec> dxs = load_pack<kVec>(dx + i, count);
    for (int j = 0; j < kVec; ++j) {
      const Index c = channel[j];
      const float yj = to_float(ys.v[j]);
      const float g = kFused ? fused.masked(to_float(dys.v[j]), yj, c) : to_float(dys.v[j]);
      dxs.v[j] = from_float<T>(to_float(dxs.v[j]) + (g * gain[c] + yj * slope[c] + shift[c]));
    }
    store_pack<kVec>(dx + i, dxs, count);
  });
}

// Device buffers of `count` elements of T, allocated when the kernel is made.
template <typename T>
std::shared_ptr<void> device_buffer(std::int64_t count, StreamContext& context, const std::string& purpose) {
  return allocate(static_cast<std::size_t>(count) * sizeof(T), context.device(), purpose);
}

// T: the storage type of x, y, z and their gradients (precision.cuh), `dtype` its DType.
template <class T>
class BatchNormKernel final : public CudaKernel {
 public:
  // `blobs`: the mean, variance and factor blobs on the device. `live`: they may change between
  // forwards (a training net's), so the stored affine is recomputed at each one; else once, now.
  BatchNormKernel(const BatchNormLayer& layer, const ChannelExtent& extent, std::vector<Tensor> blobs,
                  bool live, DType dtype, StreamContext& context)
      : CudaKernel(context),
        dtype_(dtype),
        extent_(extent),
        eps_(layer.eps()),
        fraction_(layer.moving_average_fraction()),
        batch_(layer.batch_statistics()),
        live_(live),
        blobs_(std::move(blobs)) {
    const std::string purpose = "the BatchNorm statistics of layer '" + layer.name() + "'";
    per_channel_ = device_buffer<float>((batch_ ? 5 : 2) * extent_.channels, context, purpose);
    if (batch_) return;
    if (!live_) compute_stored_affine();
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (!batch_) {
      if (live_) compute_stored_affine();
      channel_affine(context_, dtype_, inputs[0].raw(), multiplier(), offset(), outputs[0].raw(), extent_);
      return;
    }
    const T* x = typed(inputs[0]);
    if (elements() == 0) return;
    // Host blobs (an inference net's) are device copies, possibly shared with other nets: nothing
    // would read updated statistics there, so only a training net's device blobs are updated.
    RunningBlobs running;
    if (live_) running = {blobs_[0].data<float>(), blobs_[1].data<float>(), blobs_[2].data<float>()};
    reduce_channels<SumPair<double>>(
        context_, extent_, Moments<T>{x},
        FoldStatistics{count(), eps_, fraction_, running, multiplier(), offset()});
    if (fused_.scale == nullptr) {
      channel_affine(context_, dtype_, x, multiplier(), offset(), outputs[0].raw(), extent_);
      return;
    }
    const std::int64_t n = elements();
    T* y = typed(outputs[0]);
    T* z = typed(outputs[1]);
    with_index_type(n, [&](auto index) {
      with_pack_width<T>({x, y, z}, [&](auto width) {
        using Index = decltype(index);
        constexpr int kVec = decltype(width)::value;
        launch(context_, (n + kVec - 1) / kVec,
               fused_.relu ? normalize_scale<T, Index, true, kVec> : normalize_scale<T, Index, false, kVec>,
               x, multiplier(), offset(), fused_, y, z, static_cast<Index>(n),
               static_cast<Index>(extent_.channels), static_cast<Index>(extent_.inner));
      });
    });
  }

  // Backward works from the normalised output y (and the statistics), never from x: the memory plan
  // frees x once the forward is done (ResNet's convolution outputs).
  bool backward_reads_inputs() const override { return false; }

  bool fuse_training_scale(TrainingScale scale) override {
    if (!batch_ || scale.scale.numel() != extent_.channels) return false;
    fused_ = {scale.scale.data<float>(), scale.bias.defined() ? scale.bias.data<float>() : nullptr,
              scale.scale_grad.data<float>(),
              scale.bias_grad.defined() ? scale.bias_grad.data<float>() : nullptr, scale.relu};
    return true;
  }

  void backward(const Layer&, const std::vector<Tensor>&, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const bool fused = fused_.scale != nullptr;
    if (!input_grads[0].defined() && !fused) return;
    // With a fused Scale: the gradient of its (or its ReLU's) output.
    const T* dy = typed(output_grads[fused ? 1 : 0]);
    if (!batch_) {
      channel_scale_add(context_, dtype_, dy, multiplier(), input_grads[0].raw(), extent_);
      return;
    }
    const std::int64_t n = elements();
    if (n == 0) return;
    // Uses the statistics forward kept: backward follows the forward of the same batch.
    const T* y = typed(outputs[0]);
    float* gain = offset() + extent_.channels;
    float* slope = gain + extent_.channels;
    float* shift = slope + extent_.channels;
    reduce_channels<SumPair<double>>(context_, extent_, GradientTerms<T>{dy, y, fused_},
                                     FoldGradient{count(), multiplier(), fused_, gain, slope, shift});
    if (!input_grads[0].defined()) return;
    T* dx = typed(input_grads[0]);
    with_index_type(n, [&](auto index) {
      with_pack_width<T>({dy, y, dx}, [&](auto width) {
        using Index = decltype(index);
        constexpr int kVec = decltype(width)::value;
        launch(context_, (n + kVec - 1) / kVec,
               fused ? batch_input_grad<T, Index, true, kVec> : batch_input_grad<T, Index, false, kVec>, dy,
               y, fused_, gain, slope, shift, dx, static_cast<Index>(n), static_cast<Index>(extent_.channels),
               static_cast<Index>(extent_.inner));
      });
    });
  }

 private:
  std::int64_t elements() const { return extent_.outer * extent_.channels * extent_.inner; }
  double count() const { return static_cast<double>(extent_.outer * extent_.inner); }
  float* multiplier() const { return static_cast<float*>(per_channel_.get()); }
  float* offset() const { return multiplier() + extent_.channels; }
  static const T* typed(const Tensor& t) { return static_cast<const T*>(t.raw()); }
  static T* typed(Tensor& t) { return static_cast<T*>(t.raw()); }

  void compute_stored_affine() {
    if (extent_.channels == 0) return;
    launch(context_, extent_.channels, stored_affine, blobs_[0].data<float>(), blobs_[1].data<float>(),
           blobs_[2].data<float>(), eps_, multiplier(), offset(), extent_.channels);
  }

  DType dtype_;
  ChannelExtent extent_;
  float eps_, fraction_;
  bool batch_, live_;
  std::vector<Tensor> blobs_;  // handles sharing the device blobs' memory
  FusedScale fused_;           // the Scale (and ReLU) this kernel runs too, if any
  // Per channel: the multiplier and offset of the affine map (stored or batch statistics); with batch
  // statistics also the gain, slope and shift of the input gradient (FoldGradient).
  std::shared_ptr<void> per_channel_;
};

// `channels_last`: a 4-D input stored N, H, W, C.
std::unique_ptr<Kernel> batch_norm_kernel(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                          StreamContext& context, bool channels_last = false) {
  const auto& bn = static_cast<const BatchNormLayer&>(layer);
  const Shape& shape = inputs[0];
  const std::int64_t channels = BatchNormLayer::channels(shape), inner = shape.count(2);
  const std::int64_t per_image = channels * inner;
  ChannelExtent extent{per_image == 0 ? 0 : shape.numel() / per_image, channels, inner};
  if (channels_last) extent = {extent.outer * inner, channels, 1};
  const std::string owner = "layer '" + layer.name() + "'";
  std::vector<Tensor> blobs;
  for (const Tensor& blob : layer.weights()) blobs.push_back(context.device_weights(blob, owner));
  // A training net's blobs are device tensors that change (running statistics, a restored
  // snapshot); an inference net's are host tensors that never do.
  const bool live = !layer.weights()[0].device().is_cpu();
  std::unique_ptr<Kernel> kernel;
  with_storage_type(dtype, "BatchNorm", [&](auto type) {
    kernel =
        std::make_unique<BatchNormKernel<decltype(type)>>(bn, extent, std::move(blobs), live, dtype, context);
  });
  return kernel;
}

}  // namespace

std::unique_ptr<Kernel> make_batch_norm(const Layer& layer, const std::vector<Shape>& inputs,
                                        StreamContext& context) {
  return batch_norm_kernel(layer, inputs, DType::f32, context);
}

// In fp16 / bf16, forward and backward: x, y and the gradients in that type, the statistics and maps in
// fp32. Batch statistics only in mixed precision training: at inference they are normalisation statistics,
// which stay fp32 (Net's stays_fp32).
std::unique_ptr<Kernel> make_lowp_batch_norm(const Layer& layer, const std::vector<Shape>& inputs,
                                             DType dtype, StreamContext& context) {
  if (static_cast<const BatchNormLayer&>(layer).batch_statistics() && !layer.training()) return nullptr;
  return batch_norm_kernel(layer, inputs, dtype, context);
}

// Channels-last plans are inference plans: stored statistics, N·H·W rows of channels.
std::unique_ptr<Kernel> make_nhwc_batch_norm(const Layer& layer, const std::vector<Shape>& inputs,
                                             DType dtype, StreamContext& context) {
  if (static_cast<const BatchNormLayer&>(layer).batch_statistics() || inputs[0].rank() != 4) return nullptr;
  return batch_norm_kernel(layer, inputs, dtype, context, true);
}

}  // namespace espresso::cuda
