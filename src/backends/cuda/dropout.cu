// Dropout on the GPU. At inference it is a copy (copy_kernel). In training each forward draws the mask
// that the CPU reference draws for the same seed and draw number (dropout_mask.h), keeps it for
// backward, and scales kept units by 1 / (1 − ratio).
//
// The draw number lives in device memory and a one-thread kernel advances it at the start of each
// forward, so a captured CUDA graph draws a fresh mask on every replay, as eager runs do.
//
// In fp16 / bf16 the same kernels move that storage type, scaling in float: a unit is dropped in every
// precision alike.
#include <cstdint>

#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"
#include "layers/dropout.h"
#include "layers/dropout_mask.h"

namespace espresso::cuda {
namespace {

__global__ void advance_draw(unsigned long long* draw) { *draw += 1; }

// T: the storage type (precision.cuh).
template <class T>
__global__ void drop_units(const T* x, T* y, std::uint8_t* mask, long long n, std::uint64_t seed,
                           const unsigned long long* draw, float ratio, float scale) {
  const std::uint64_t stream = dropout_stream(seed, *draw);
  for (long long i : grid_stride(n)) {
    const bool keep = dropout_keeps(stream, static_cast<std::uint64_t>(i), ratio);
    mask[i] = keep ? 1 : 0;
    y[i] = from_float<T>(keep ? to_float(x[i]) * scale : 0.0f);
  }
}

template <class T>
__global__ void add_kept_gradient(const std::uint8_t* mask, const T* dy, T* dx, long long n, float scale) {
  for (long long i : grid_stride(n)) {
    dx[i] = from_float<T>(to_float(dx[i]) + (mask[i] ? to_float(dy[i]) * scale : 0.0f));
  }
}

template <class T>
class DropoutTrainingKernel final : public CudaKernel {
 public:
  DropoutTrainingKernel(std::uint64_t seed, float ratio, const Shape& shape, StreamContext& context)
      : CudaKernel(context),
        seed_(seed),
        ratio_(ratio),
        scale_(1.0f / (1.0f - ratio)),
        draw_(Tensor::zeros(Shape{1}, DType::i64, context.device())),
        mask_(Tensor::empty(shape, DType::i8, context.device())) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    auto* draw = reinterpret_cast<unsigned long long*>(draw_.data<std::int64_t>());
    launch(context_, Grid{1, 1}, advance_draw, draw);
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    launch(context_, n, drop_units<T>, static_cast<const T*>(inputs[0].raw()),
           static_cast<T*>(outputs[0].raw()), mask(), n, seed_, draw, ratio_, scale_);
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    launch(context_, n, add_kept_gradient<T>, mask(), static_cast<const T*>(output_grads[0].raw()),
           static_cast<T*>(input_grads[0].raw()), n, scale_);
  }
  const char* name() const override { return "cuda-dropout"; }

 private:
  std::uint8_t* mask() { return reinterpret_cast<std::uint8_t*>(mask_.data<std::int8_t>()); }

  std::uint64_t seed_;
  float ratio_, scale_;
  Tensor draw_;  // one counter: the number of forwards so far
  Tensor mask_;  // 1 where the last forward kept the unit
};

template <class T>
std::unique_ptr<Kernel> training_kernel(const Layer& layer, const Shape& shape, StreamContext& context) {
  const auto& dropout = static_cast<const DropoutLayer&>(layer);
  return std::make_unique<DropoutTrainingKernel<T>>(layer.seed(), dropout.ratio(), shape, context);
}

}  // namespace

std::unique_ptr<Kernel> make_dropout(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context) {
  if (!layer.training()) return copy_kernel(layer, inputs, context);
  return training_kernel<float>(layer, inputs[0], context);
}

std::unique_ptr<Kernel> make_lowp_dropout(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                          StreamContext& context) {
  if (!layer.training()) return copy_kernel(layer, inputs, context);
  std::unique_ptr<Kernel> kernel;
  with_storage_type(dtype, "Dropout",
                    [&](auto type) { kernel = training_kernel<decltype(type)>(layer, inputs[0], context); });
  return kernel;
}

}  // namespace espresso::cuda
