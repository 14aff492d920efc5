// BatchNorm on the GPU. With stored statistics it is a per-channel affine map (channel_affine.h).
// With batch statistics (training) each channel's mean and variance are reduced by one block, in
// double as the reference does; forward folds them into the running blobs and keeps them, with the
// output, for backward.
#include "backends/cuda/block_sum.cuh"
#include "backends/cuda/channel_affine.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
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

// Per channel (a block each): the batch mean and sqrt(biased variance + eps), in two passes as the
// reference; then Caffe's moving averages: mean = mean·f + μ, var = var·f + m/(m−1)·σ², s = s·f + 1.
__global__ void batch_statistics(const float* __restrict__ x, ChannelExtent extent, float eps, float fraction,
                                 double* __restrict__ mean, double* __restrict__ deviation,
                                 RunningBlobs running) {
  const std::int64_t per_channel = extent.outer * extent.inner;
  const auto count = static_cast<double>(per_channel);
  const double unbiased = count > 1 ? count / (count - 1) : 1.0;
  for (std::int64_t c : block_stride(extent.channels)) {
    double sum = 0.0;
    for (std::int64_t j = threadIdx.x; j < per_channel; j += blockDim.x)
      sum += x[channel_element(extent, c, j)];
    const double channel_mean = block_sum<kThreads>(sum) / count;
    double squares = 0.0;
    for (std::int64_t j = threadIdx.x; j < per_channel; j += blockDim.x) {
      const double centered = x[channel_element(extent, c, j)] - channel_mean;
      squares += centered * centered;
    }
    const double variance = block_sum<kThreads>(squares) / count;
    if (threadIdx.x == 0) {
      mean[c] = channel_mean;
      deviation[c] = sqrt(variance + eps);
      if (running.mean != nullptr) {
        // The products stay in float, as in the reference.
        running.mean[c] = static_cast<float>(running.mean[c] * fraction + channel_mean);
        running.variance[c] = static_cast<float>(running.variance[c] * fraction + unbiased * variance);
      }
    }
  }
  // Unfused, to round as the CPU does.
  if (running.factor != nullptr && blockIdx.x == 0 && threadIdx.x == 0)
    *running.factor = __fadd_rn(__fmul_rn(*running.factor, fraction), 1.0f);
}

// No __restrict__: outside training the executor may run the layer in place.
__global__ void normalize(const float* x, float* y, const double* __restrict__ mean,
                          const double* __restrict__ deviation, std::int64_t n, std::int64_t channels,
                          std::int64_t inner) {
  for (std::int64_t i : grid_stride(n)) {
    const std::int64_t c = i / inner % channels;
    y[i] = static_cast<float>((x[i] - mean[c]) / deviation[c]);
  }
}

// Per channel (a block each): Σ dy and Σ dy·y, in double as the reference.
__global__ void gradient_sums(const float* __restrict__ dy, const float* __restrict__ y, ChannelExtent extent,
                              double* __restrict__ sum_dy, double* __restrict__ sum_dy_y) {
  const std::int64_t per_channel = extent.outer * extent.inner;
  for (std::int64_t c : block_stride(extent.channels)) {
    SumPair<double> local{0.0, 0.0};
    for (std::int64_t j = threadIdx.x; j < per_channel; j += blockDim.x) {
      const std::int64_t i = channel_element(extent, c, j);
      local.first += dy[i];
      local.second += static_cast<double>(dy[i]) * y[i];
    }
    const SumPair<double> total = block_sum<kThreads>(local);
    if (threadIdx.x == 0) {
      sum_dy[c] = total.first;
      sum_dy_y[c] = total.second;
    }
  }
}

// dx += (dy − mean(dy) − y · mean(dy · y)) / sqrt(σ² + eps), means over each channel's batch.
__global__ void batch_input_grad(const float* __restrict__ dy, const float* __restrict__ y,
                                 const double* __restrict__ deviation, const double* __restrict__ sum_dy,
                                 const double* __restrict__ sum_dy_y, double count, float* __restrict__ dx,
                                 std::int64_t n, std::int64_t channels, std::int64_t inner) {
  for (std::int64_t i : grid_stride(n)) {
    const std::int64_t c = i / inner % channels;
    dx[i] += static_cast<float>((dy[i] - sum_dy[c] / count - y[i] * sum_dy_y[c] / count) / deviation[c]);
  }
}

// Device buffers of `count` elements of T, allocated when the kernel is made.
template <typename T>
std::shared_ptr<void> device_buffer(std::int64_t count, StreamContext& context, const std::string& purpose) {
  return allocate(static_cast<std::size_t>(count) * sizeof(T), context.device(), purpose);
}

class BatchNormKernel final : public CudaKernel {
 public:
  // `blobs`: the mean, variance and factor blobs on the device. `live`: they may change between
  // forwards (a training net's), so the stored affine is recomputed at each one; else once, now.
  // `dtype`: the storage type of x and y; f16 and bf16 only with stored statistics (inference).
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
    if (batch_) {
      per_channel_ = device_buffer<double>(4 * extent_.channels, context, purpose);
      return;
    }
    per_channel_ = device_buffer<float>(2 * extent_.channels, context, purpose);
    if (!live_) compute_stored_affine();
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (!batch_) {
      if (live_) compute_stored_affine();
      channel_affine(context_, dtype_, inputs[0].raw(), multiplier(), multiplier() + extent_.channels,
                     outputs[0].raw(), extent_);
      return;
    }
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const std::int64_t n = elements();
    if (n == 0) return;
    // Host blobs (an inference net's) are device copies, possibly shared with other nets: nothing
    // would read updated statistics there, so only a training net's device blobs are updated.
    RunningBlobs running;
    if (live_) running = {blobs_[0].data<float>(), blobs_[1].data<float>(), blobs_[2].data<float>()};
    launch(context_, Grid{channel_blocks(extent_.channels), kThreads}, batch_statistics, x, extent_, eps_,
           fraction_, batch_mean(), deviation(), running);
    launch(context_, n, normalize, x, y, batch_mean(), deviation(), n, extent_.channels, extent_.inner);
  }

  bool has_fast_backward() const override { return dtype_ == DType::f32; }

  void backward(const Layer&, const std::vector<Tensor>&, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    if (!input_grads[0].defined()) return;
    const float* dy = output_grads[0].data<float>();
    float* dx = input_grads[0].data<float>();
    if (!batch_) {
      channel_scale_add(context_, dy, multiplier(), dx, extent_);
      return;
    }
    const std::int64_t n = elements();
    if (n == 0) return;
    // Uses the statistics forward kept: backward follows the forward of the same batch.
    const float* y = outputs[0].data<float>();
    double* sum_dy = deviation() + extent_.channels;
    double* sum_dy_y = sum_dy + extent_.channels;
    launch(context_, Grid{channel_blocks(extent_.channels), kThreads}, gradient_sums, dy, y, extent_, sum_dy,
           sum_dy_y);
    const auto count = static_cast<double>(extent_.outer * extent_.inner);
    launch(context_, n, batch_input_grad, dy, y, deviation(), sum_dy, sum_dy_y, count, dx, n,
           extent_.channels, extent_.inner);
  }

 private:
  std::int64_t elements() const { return extent_.outer * extent_.channels * extent_.inner; }
  float* multiplier() const { return static_cast<float*>(per_channel_.get()); }
  double* batch_mean() const { return static_cast<double*>(per_channel_.get()); }
  double* deviation() const { return batch_mean() + extent_.channels; }

  void compute_stored_affine() {
    if (extent_.channels == 0) return;
    launch(context_, extent_.channels, stored_affine, blobs_[0].data<float>(), blobs_[1].data<float>(),
           blobs_[2].data<float>(), eps_, multiplier(), multiplier() + extent_.channels, extent_.channels);
  }

  DType dtype_;
  ChannelExtent extent_;
  float eps_, fraction_;
  bool batch_, live_;
  std::vector<Tensor> blobs_;  // handles sharing the device blobs' memory
  // With stored statistics: multiplier and offset (float). With batch statistics: the batch mean,
  // deviation, Σ dy and Σ dy·y (double).
  std::shared_ptr<void> per_channel_;
};

std::unique_ptr<Kernel> batch_norm_kernel(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                          StreamContext& context) {
  const auto& bn = static_cast<const BatchNormLayer&>(layer);
  const Shape& shape = inputs[0];
  const std::int64_t channels = BatchNormLayer::channels(shape), inner = shape.count(2);
  const std::int64_t per_image = channels * inner;
  const ChannelExtent extent{per_image == 0 ? 0 : shape.numel() / per_image, channels, inner};
  const std::string owner = "layer '" + layer.name() + "'";
  std::vector<Tensor> blobs;
  for (const Tensor& blob : layer.weights()) blobs.push_back(context.device_weights(blob, owner));
  // A training net's blobs are device tensors that change (running statistics, a restored
  // snapshot); an inference net's are host tensors that never do.
  const bool live = !layer.weights()[0].device().is_cpu();
  return std::make_unique<BatchNormKernel>(bn, extent, std::move(blobs), live, dtype, context);
}

}  // namespace

std::unique_ptr<Kernel> make_batch_norm(const Layer& layer, const std::vector<Shape>& inputs,
                                        StreamContext& context) {
  return batch_norm_kernel(layer, inputs, DType::f32, context);
}

// In fp16 / bf16 with stored statistics: the per-channel affine map, its parameters in fp32. Batch
// statistics (normalisation statistics) stay fp32.
std::unique_ptr<Kernel> make_lowp_batch_norm(const Layer& layer, const std::vector<Shape>& inputs,
                                             DType dtype, StreamContext& context) {
  if (static_cast<const BatchNormLayer&>(layer).batch_statistics()) return nullptr;
  return batch_norm_kernel(layer, inputs, dtype, context);
}

}  // namespace espresso::cuda
