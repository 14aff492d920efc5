// The element-wise layers on the GPU (AbsVal, Activation, Power, PReLU, Sigmoid, TanH): one grid-stride
// kernel template applies an operation object; each layer contributes only its formula.
#include <cuda_fp16.h>

#include <cmath>

#include "backends/cuda/kernels.h"
#include "layers/activation.h"
#include "layers/power.h"
#include "layers/prelu.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;

template <class Op>
__global__ void map_elements(const float* x, float* y, long long n, Op op) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    y[i] = op(x[i], i);
  }
}

struct AbsOp {
  __device__ float operator()(float x, long long) const { return fabsf(x); }
};

struct SigmoidOp {
  __device__ float operator()(float x, long long) const { return 1.0f / (1.0f + expf(-x)); }
};

struct TanHOp {
  __device__ float operator()(float x, long long) const { return tanhf(x); }
};

struct PowerOp {
  float power, scale, shift;
  __device__ float operator()(float x, long long) const { return powf(shift + scale * x, power); }
};

struct PReLUOp {
  const float* slope;
  long long channels, inner;  // channels 1 when the slope is shared
  __device__ float operator()(float x, long long i) const {
    const float a = slope[channels == 1 ? 0 : i / inner % channels];
    return x > 0.0f ? x : a * x;
  }
};

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
};

template <class Op>
class ElementwiseKernel final : public Kernel {
 public:
  ElementwiseKernel(Op op, StreamContext& context) : op_(op), context_(context) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    map_elements<<<elementwise_blocks(context_, n, kThreads), kThreads, 0, context_.stream()>>>(
        inputs[0].data<float>(), outputs[0].data<float>(), n, op_);
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
  }
  const char* name() const override { return "cuda"; }

 private:
  Op op_;
  StreamContext& context_;
};

template <class Op>
std::unique_ptr<Kernel> make_elementwise(Op op, StreamContext& context) {
  return std::make_unique<ElementwiseKernel<Op>>(op, context);
}

}  // namespace

std::unique_ptr<Kernel> make_absval(const Layer&, const std::vector<Shape>&, StreamContext& context) {
  return make_elementwise(AbsOp{}, context);
}

std::unique_ptr<Kernel> make_activation(const Layer& layer, const std::vector<Shape>&,
                                        StreamContext& context) {
  const auto& a = static_cast<const ActivationLayer&>(layer);
  return make_elementwise(
      ActivationOp{a.function(), static_cast<float>(a.alpha()), static_cast<float>(a.beta()),
                   static_cast<float>(a.gamma()), static_cast<float>(a.min()), static_cast<float>(a.max())},
      context);
}

std::unique_ptr<Kernel> make_power(const Layer& layer, const std::vector<Shape>&, StreamContext& context) {
  const auto& power = static_cast<const PowerLayer&>(layer);
  return make_elementwise(PowerOp{power.power(), power.scale(), power.shift()}, context);
}

std::unique_ptr<Kernel> make_prelu(const Layer& layer, const std::vector<Shape>& inputs,
                                   StreamContext& context) {
  const auto& prelu = static_cast<const PReLULayer&>(layer);
  const Shape& shape = inputs[0];
  const float* slope =
      context.device_weights(layer.weights()[0], "layer '" + layer.name() + "'").data<float>();
  return make_elementwise(PReLUOp{slope, prelu.channel_shared() ? 1 : shape[1], shape.count(2)}, context);
}

std::unique_ptr<Kernel> make_sigmoid(const Layer&, const std::vector<Shape>&, StreamContext& context) {
  return make_elementwise(SigmoidOp{}, context);
}

std::unique_ptr<Kernel> make_tanh(const Layer&, const std::vector<Shape>&, StreamContext& context) {
  return make_elementwise(TanHOp{}, context);
}

}  // namespace espresso::cuda
