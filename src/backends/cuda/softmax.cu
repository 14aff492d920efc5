// Softmax on the GPU: a warp per line along the axis (outer x inner lines of `channels` values),
// reducing the maximum and the sum with shuffles. Backward likewise reduces Σ dy·y per line.
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/softmax.h"

namespace espresso::cuda {
namespace {

__global__ void softmax_lines(const float* __restrict__ x, float* __restrict__ y, long long outer,
                              long long channels, long long inner) {
  const long long lines = outer * inner;
  const int lane = threadIdx.x % kWarp;
  for (long long line : warp_stride(lines)) {
    const long long base = line / inner * channels * inner + line % inner;
    float max = -INFINITY;
    for (long long c = lane; c < channels; c += kWarp) max = fmaxf(max, x[base + c * inner]);
    max = warp_max(max);
    float sum = 0.0f;
    for (long long c = lane; c < channels; c += kWarp) {
      const float e = expf(x[base + c * inner] - max);
      y[base + c * inner] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    for (long long c = lane; c < channels; c += kWarp) y[base + c * inner] /= sum;
  }
}

// dx += y · (dy − Σ_c dy·y) along each line.
__global__ void softmax_backward_lines(const float* y, const float* dy, float* dx, long long outer,
                                       long long channels, long long inner) {
  const long long lines = outer * inner;
  const int lane = threadIdx.x % kWarp;
  for (long long line : warp_stride(lines)) {
    const long long base = line / inner * channels * inner + line % inner;
    float dot = 0.0f;
    for (long long c = lane; c < channels; c += kWarp) dot += dy[base + c * inner] * y[base + c * inner];
    dot = warp_sum(dot);
    for (long long c = lane; c < channels; c += kWarp) {
      const long long at = base + c * inner;
      dx[at] += y[at] * (dy[at] - dot);
    }
  }
}

class SoftmaxKernel final : public CudaKernel {
 public:
  SoftmaxKernel(const AxisSplit& split, StreamContext& context) : CudaKernel(context), split_(split) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const long long lines = split_.outer * split_.inner;
    if (lines == 0 || split_.channels == 0) return;
    launch(context_, lines * kWarp, softmax_lines, inputs[0].data<float>(), outputs[0].data<float>(),
           split_.outer, split_.channels, split_.inner);
  }
  void backward(const Layer&, const std::vector<Tensor>&, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const long long lines = split_.outer * split_.inner;
    if (lines == 0 || split_.channels == 0 || !input_grads[0].defined()) return;
    launch(context_, lines * kWarp, softmax_backward_lines, outputs[0].data<float>(),
           output_grads[0].data<float>(), input_grads[0].data<float>(), split_.outer, split_.channels,
           split_.inner);
  }

 private:
  AxisSplit split_;
};

}  // namespace

std::unique_ptr<Kernel> make_softmax(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context) {
  return std::make_unique<SoftmaxKernel>(static_cast<const SoftmaxLayer&>(layer).split(inputs[0]), context);
}

}  // namespace espresso::cuda
