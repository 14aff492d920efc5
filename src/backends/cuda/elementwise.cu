// The element-wise layers on the GPU (Activation, PReLU): one grid-stride
// kernel template applies an operation object; each layer contributes only its formula and its
// derivative, slope(x, y, i) = dy/dx at element i of input x and output y.
#include <cuda_fp16.h>

#include <cmath>

#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"
#include "layers/activation.h"
#include "layers/prelu.h"

namespace espresso::cuda {
namespace {

// T: the storage type (precision.cuh); the operation computes in float.
template <class T, class Op>
__global__ void map_elements(const T* x, T* y, long long n, Op op) {
  for (long long i : grid_stride(n)) {
    y[i] = from_float<T>(op(to_float(x[i]), i));
  }
}

// dx += dy · dy/dx, one thread per element.
template <class Op>
__global__ void add_input_gradient(const float* x, const float* y, const float* dy, float* dx, long long n,
                                   Op op) {
  for (long long i : grid_stride(n)) {
    dx[i] += dy[i] * op.slope(x[i], y[i], i);
  }
}

struct PReLUOp {
  const float* slope_weights;
  long long channels, inner;  // channels 1 when the slope is shared
  __device__ float channel_slope(long long i) const {
    return slope_weights[channels == 1 ? 0 : i / inner % channels];
  }
  __device__ float operator()(float x, long long i) const { return x > 0.0f ? x : channel_slope(i) * x; }
  __device__ float slope(float x, float, long long i) const { return x > 0.0f ? 1.0f : channel_slope(i); }
};

// dslope[c] += Σ dy·x over channel c's elements with x ≤ 0: one block per channel, so each slope
// has one writer. A channel's elements are `count` = outer·inner, at (o·channels + c)·inner + j.
__global__ void add_prelu_slope_gradient(const float* x, const float* dy, float* dslope, long long count,
                                         long long channels, long long inner) {
  const long long c = blockIdx.x;
  float sum = 0.0f;
  for (long long k = threadIdx.x; k < count; k += blockDim.x) {
    const long long i = (k / inner * channels + c) * inner + k % inner;
    if (x[i] <= 0.0f) sum += dy[i] * x[i];
  }
  __shared__ float warp_sums[kThreads / kWarp];
  sum = warp_sum(sum);
  if (threadIdx.x % kWarp == 0) warp_sums[threadIdx.x / kWarp] = sum;
  __syncthreads();
  if (threadIdx.x < kWarp) {
    sum = threadIdx.x < kThreads / kWarp ? warp_sums[threadIdx.x] : 0.0f;
    sum = warp_sum(sum);
    if (threadIdx.x == 0) dslope[c] += sum;
  }
}

struct ActivationOp {
  ActivationLayer::Function function;
  float alpha, beta, gamma, lo, hi;
  __device__ float operator()(float x, long long) const {
    using F = ActivationLayer::Function;
    switch (function) {
      case F::clip:
        return fminf(fmaxf(x, lo), hi);
      case F::hard_sigmoid:
        return fmaxf(0.0f, fminf(1.0f, alpha * x + beta));
      case F::hard_swish:
        return x * fmaxf(0.0f, fminf(1.0f, x / 6.0f + 0.5f));
      case F::elu:
        return x > 0.0f ? x : alpha * expm1f(x);
      case F::selu:
        return gamma * (x > 0.0f ? x : alpha * expm1f(x));
      case F::softplus:
        return x > 20.0f ? x : log1pf(expf(x));
      case F::softsign:
        return x / (1.0f + fabsf(x));
      case F::sigmoid:
        return sigmoid_value(x);
      case F::tanh:
        return tanhf(x);
      case F::power:
        return power_value(x, alpha, beta, gamma);
      case F::exp:
        return expf(x);
      case F::log:
        return logf(x);
      case F::sqrt:
        return sqrtf(x);
      case F::neg:
        return -x;
      case F::reciprocal:
        return 1.0f / x;
      case F::floor:
        return floorf(x);
      case F::ceil:
        return ceilf(x);
      case F::abs:
        return fabsf(x);
      case F::float16:
        return __half2float(__float2half_rn(x));
    }
    return x;
  }
  // The reference's derivatives and its choices at kinks (see activation.h).
  __device__ float slope(float x, float y, long long) const {
    using F = ActivationLayer::Function;
    switch (function) {
      case F::clip:
        return x >= lo && x <= hi ? 1.0f : 0.0f;
      case F::hard_sigmoid: {
        const float t = alpha * x + beta;
        return t > 0.0f && t < 1.0f ? alpha : 0.0f;
      }
      case F::hard_swish: {
        const float t = x / 6.0f + 0.5f;
        return fmaxf(0.0f, fminf(1.0f, t)) + (t > 0.0f && t < 1.0f ? x / 6.0f : 0.0f);
      }
      case F::elu:
        return x > 0.0f ? 1.0f : alpha * expf(x);
      case F::selu:
        return gamma * (x > 0.0f ? 1.0f : alpha * expf(x));
      case F::softplus:
        return x > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-x));
      case F::softsign: {
        const float d = 1.0f + fabsf(x);
        return 1.0f / (d * d);
      }
      case F::sigmoid:
        return y * (1.0f - y);
      case F::tanh:
        return 1.0f - y * y;
      case F::power:
        return power_slope(x, alpha, beta, gamma);
      case F::exp:
        return expf(x);
      case F::log:
        return 1.0f / x;
      case F::sqrt:
        return 0.5f / sqrtf(x);
      case F::neg:
        return -1.0f;
      case F::reciprocal:
        return -1.0f / (x * x);
      case F::floor:
      case F::ceil:
        return 0.0f;
      case F::abs:
        return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : 0.0f;
      case F::float16:
        return 1.0f;
    }
    return 0.0f;
  }
};

template <class Op>
class ElementwiseKernel : public CudaKernel {
 public:
  ElementwiseKernel(Op op, StreamContext& context) : CudaKernel(context), op_(op) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    launch(context_, n, map_elements<float, Op>, inputs[0].data<float>(), outputs[0].data<float>(), n, op_);
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    launch(context_, n, add_input_gradient<Op>, inputs[0].data<float>(), outputs[0].data<float>(),
           output_grads[0].data<float>(), input_grads[0].data<float>(), n, op_);
  }

 protected:
  Op op_;
};

// The element-wise kernel plus the gradient of the slopes.
class PReLUKernel final : public ElementwiseKernel<PReLUOp> {
 public:
  using ElementwiseKernel::ElementwiseKernel;

  void backward(const Layer& layer, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    ElementwiseKernel::backward(layer, inputs, outputs, output_grads, input_grads, weight_grads);
    const std::int64_t n = inputs[0].numel();
    if (n == 0 || !weight_grads[0].defined()) return;
    launch(context_, Grid{static_cast<unsigned>(op_.channels), kThreads}, add_prelu_slope_gradient,
           inputs[0].data<float>(), output_grads[0].data<float>(), weight_grads[0].data<float>(),
           n / op_.channels, op_.channels, op_.inner);
  }
};

template <class Op>
std::unique_ptr<Kernel> elementwise_kernel(Op op, StreamContext& context) {
  return std::make_unique<ElementwiseKernel<Op>>(op, context);
}

// fp16 / bf16 inference: the same operation over another storage type.
template <class T, class Op>
class LowpElementwiseKernel final : public CudaKernel {
 public:
  LowpElementwiseKernel(Op op, StreamContext& context) : CudaKernel(context), op_(op) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    launch(context_, n, map_elements<T, Op>, static_cast<const T*>(inputs[0].raw()),
           static_cast<T*>(outputs[0].raw()), n, op_);
  }
  bool has_fast_backward() const override { return false; }

 private:
  Op op_;
};

template <class Op>
std::unique_ptr<Kernel> lowp_elementwise_kernel(Op op, DType dtype, StreamContext& context) {
  std::unique_ptr<Kernel> kernel;
  with_storage_type(dtype, "element-wise layer", [&](auto type) {
    kernel = std::make_unique<LowpElementwiseKernel<decltype(type), Op>>(op, context);
  });
  return kernel;
}

ActivationOp activation_op(const ActivationLayer& a) {
  return ActivationOp{a.function(),
                      static_cast<float>(a.alpha()),
                      static_cast<float>(a.beta()),
                      static_cast<float>(a.gamma()),
                      static_cast<float>(a.min()),
                      static_cast<float>(a.max())};
}

}  // namespace

std::unique_ptr<Kernel> make_lowp_activation(const Layer& layer, const std::vector<Shape>&, DType dtype,
                                             StreamContext& context) {
  const auto& a = static_cast<const ActivationLayer&>(layer);
  // Functions whose outputs leave fp16's range for ordinary inputs, and steps (floor, ceil) that rounding
  // the input would move by a whole unit, stay fp32.
  using F = ActivationLayer::Function;
  const F f = a.function();
  if (f == F::exp || f == F::log || f == F::reciprocal || f == F::power || f == F::float16 || f == F::floor ||
      f == F::ceil) {
    return nullptr;
  }
  return lowp_elementwise_kernel(activation_op(a), dtype, context);
}

std::unique_ptr<Kernel> make_activation(const Layer& layer, const std::vector<Shape>&,
                                        StreamContext& context) {
  return elementwise_kernel(activation_op(static_cast<const ActivationLayer&>(layer)), context);
}

std::unique_ptr<Kernel> make_prelu(const Layer& layer, const std::vector<Shape>& inputs,
                                   StreamContext& context) {
  const auto& prelu = static_cast<const PReLULayer&>(layer);
  const Shape& shape = inputs[0];
  const float* slope =
      context.device_weights(layer.weights()[0], "layer '" + layer.name() + "'").data<float>();
  return std::make_unique<PReLUKernel>(PReLUOp{slope, prelu.channel_shared() ? 1 : shape[1], shape.count(2)},
                                       context);
}

}  // namespace espresso::cuda
