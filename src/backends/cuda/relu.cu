// ReLU on the GPU: 16-byte loads and stores where the buffers allow, a grid-stride loop otherwise.
// Backward is a plain grid-stride loop.
#include <cstdint>

#include "backends/cuda/kernels.h"
#include "layers/relu.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float leaky(float x, float slope) { return x > 0.0f ? x : slope * x; }

__global__ void relu_vec4(const float4* x, float4* y, std::int64_t n4, float slope) {
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n4;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const float4 v = x[i];
    y[i] = make_float4(leaky(v.x, slope), leaky(v.y, slope), leaky(v.z, slope), leaky(v.w, slope));
  }
}

__global__ void relu_scalar(const float* x, float* y, std::int64_t n, float slope) {
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    y[i] = leaky(x[i], slope);
  }
}

// dx += dy where the input was positive, slope · dy elsewhere.
__global__ void relu_backward(const float* x, const float* dy, float* dx, std::int64_t n, float slope) {
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    dx[i] += x[i] > 0.0f ? dy[i] : slope * dy[i];
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

class ReLUKernel final : public Kernel {
 public:
  ReLUKernel(float slope, StreamContext& context) : slope_(slope), context_(context) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    std::int64_t done = 0;
    if (aligned16(x) && aligned16(y) && n >= 4) {
      const std::int64_t n4 = n / 4;
      relu_vec4<<<elementwise_blocks(context_, n4, kThreads), kThreads, 0, context_.stream()>>>(
          reinterpret_cast<const float4*>(x), reinterpret_cast<float4*>(y), n4, slope_);
      ESPRESSO_CUDA_CHECK(cudaGetLastError());
      done = n4 * 4;
    }
    if (done < n) {
      relu_scalar<<<elementwise_blocks(context_, n - done, kThreads), kThreads, 0, context_.stream()>>>(
          x + done, y + done, n - done, slope_);
      ESPRESSO_CUDA_CHECK(cudaGetLastError());
    }
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    relu_backward<<<elementwise_blocks(context_, n, kThreads), kThreads, 0, context_.stream()>>>(
        inputs[0].data<float>(), output_grads[0].data<float>(), input_grads[0].data<float>(), n, slope_);
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
  }
  bool has_fast_backward() const override { return true; }
  const char* name() const override { return "cuda"; }

 private:
  float slope_;
  StreamContext& context_;
};

}  // namespace

std::unique_ptr<Kernel> make_relu(const Layer& layer, const std::vector<Shape>&, StreamContext& context) {
  return std::make_unique<ReLUKernel>(static_cast<const ReLULayer&>(layer).negative_slope(), context);
}

}  // namespace espresso::cuda
