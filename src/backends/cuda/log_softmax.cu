// LogSoftmax on the GPU: a warp per line along the axis, reducing the maximum and the sum of
// exponentials with shuffles. Backward likewise reduces Σ dy per line.
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/log_softmax.h"

namespace espresso::cuda {
namespace {

__global__ void log_softmax_lines(const float* __restrict__ x, float* __restrict__ y, long long lines,
                                  long long size, long long inner) {
  const int lane = threadIdx.x % kWarp;
  for (long long line : warp_stride(lines)) {
    const long long base = line / inner * size * inner + line % inner;
    float peak = -INFINITY;
    for (long long k = lane; k < size; k += kWarp) peak = fmaxf(peak, x[base + k * inner]);
    peak = warp_max(peak);
    float sum = 0.0f;
    for (long long k = lane; k < size; k += kWarp) sum += expf(x[base + k * inner] - peak);
    sum = warp_sum(sum);
    const float log_sum = logf(sum);
    for (long long k = lane; k < size; k += kWarp) y[base + k * inner] = x[base + k * inner] - peak - log_sum;
  }
}

// dx += dy − softmax · Σ_k dy along each line, with softmax = exp(y).
__global__ void log_softmax_backward_lines(const float* y, const float* dy, float* dx, long long lines,
                                           long long size, long long inner) {
  const int lane = threadIdx.x % kWarp;
  for (long long line : warp_stride(lines)) {
    const long long base = line / inner * size * inner + line % inner;
    float sum = 0.0f;
    for (long long k = lane; k < size; k += kWarp) sum += dy[base + k * inner];
    sum = warp_sum(sum);
    for (long long k = lane; k < size; k += kWarp) {
      const long long at = base + k * inner;
      dx[at] += dy[at] - expf(y[at]) * sum;
    }
  }
}

class LogSoftmaxKernel final : public CudaKernel {
 public:
  LogSoftmaxKernel(std::int64_t outer, std::int64_t size, std::int64_t inner, StreamContext& context)
      : CudaKernel(context), outer_(outer), size_(size), inner_(inner) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const long long lines = outer_ * inner_;
    if (lines == 0 || size_ == 0) return;
    launch(context_, lines * kWarp, log_softmax_lines, inputs[0].data<float>(), outputs[0].data<float>(),
           lines, size_, inner_);
  }
  void backward(const Layer&, const std::vector<Tensor>&, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const long long lines = outer_ * inner_;
    if (lines == 0 || size_ == 0 || !input_grads[0].defined()) return;
    launch(context_, lines * kWarp, log_softmax_backward_lines, outputs[0].data<float>(),
           output_grads[0].data<float>(), input_grads[0].data<float>(), lines, size_, inner_);
  }

 private:
  std::int64_t outer_, size_, inner_;
};

}  // namespace

std::unique_ptr<Kernel> make_log_softmax(const Layer& layer, const std::vector<Shape>& inputs,
                                         StreamContext& context) {
  layer.output_shapes(inputs);  // validates the axis
  const Shape& shape = inputs[0];
  const int axis = shape.canonical_axis(static_cast<const LogSoftmaxLayer&>(layer).axis());
  return std::make_unique<LogSoftmaxKernel>(shape.count(0, axis), shape[axis], shape.count(axis + 1),
                                            context);
}

}  // namespace espresso::cuda
