// Dropout on the GPU. At inference it is a copy (copy_kernel). In training each forward draws the mask
// that the CPU reference draws for the same seed and draw number (dropout_mask.h), keeps it for
// backward, and scales kept units by 1 / (1 − ratio).
//
// The draw number lives in device memory and a one-thread kernel advances it at the start of each
// forward, so a captured CUDA graph draws a fresh mask on every replay, as eager runs do.
#include <cstdint>

#include "backends/cuda/kernels.h"
#include "layers/dropout.h"
#include "layers/dropout_mask.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void advance_draw(unsigned long long* draw) { *draw += 1; }

__global__ void drop_units(const float* x, float* y, std::uint8_t* mask, long long n, std::uint64_t seed,
                           const unsigned long long* draw, float ratio, float scale) {
  const std::uint64_t stream = dropout_stream(seed, *draw);
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const bool keep = dropout_keeps(stream, static_cast<std::uint64_t>(i), ratio);
    mask[i] = keep ? 1 : 0;
    y[i] = keep ? x[i] * scale : 0.0f;
  }
}

__global__ void add_kept_gradient(const std::uint8_t* mask, const float* dy, float* dx, long long n,
                                  float scale) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    dx[i] += mask[i] ? dy[i] * scale : 0.0f;
  }
}

class DropoutTrainingKernel final : public Kernel {
 public:
  DropoutTrainingKernel(std::uint64_t seed, float ratio, const Shape& shape, StreamContext& context)
      : seed_(seed),
        ratio_(ratio),
        scale_(1.0f / (1.0f - ratio)),
        draw_(Tensor::zeros(Shape{1}, DType::i64, context.device())),
        mask_(Tensor::empty(shape, DType::i8, context.device())),
        context_(context) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    auto* draw = reinterpret_cast<unsigned long long*>(draw_.data<std::int64_t>());
    advance_draw<<<1, 1, 0, context_.stream()>>>(draw);
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    drop_units<<<elementwise_blocks(context_, n, kThreads), kThreads, 0, context_.stream()>>>(
        inputs[0].data<float>(), outputs[0].data<float>(), mask(), n, seed_, draw, ratio_, scale_);
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    add_kept_gradient<<<elementwise_blocks(context_, n, kThreads), kThreads, 0, context_.stream()>>>(
        mask(), output_grads[0].data<float>(), input_grads[0].data<float>(), n, scale_);
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
  }
  bool has_fast_backward() const override { return true; }
  const char* name() const override { return "cuda-dropout"; }

 private:
  std::uint8_t* mask() { return reinterpret_cast<std::uint8_t*>(mask_.data<std::int8_t>()); }

  std::uint64_t seed_;
  float ratio_, scale_;
  Tensor draw_;  // one counter: the number of forwards so far
  Tensor mask_;  // 1 where the last forward kept the unit
  StreamContext& context_;
};

}  // namespace

std::unique_ptr<Kernel> make_dropout(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context) {
  if (!layer.training()) return copy_kernel(layer, inputs, context);
  const auto& dropout = static_cast<const DropoutLayer&>(layer);
  return std::make_unique<DropoutTrainingKernel>(layer.seed(), dropout.ratio(), inputs[0], context);
}

}  // namespace espresso::cuda
