// ReLU on the GPU: 16-byte loads and stores where the buffers allow, a grid-stride loop otherwise.
// Backward is a plain grid-stride loop. fp16 / bf16 share the kernels, scalar, computed in float.
#include <cstdint>
#include <type_traits>

#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"
#include "layers/relu.h"

namespace espresso::cuda {
namespace {

__device__ float leaky(float x, float slope) { return x > 0.0f ? x : slope * x; }

__global__ void relu_vec4(const float4* x, float4* y, std::int64_t n4, float slope) {
  for (std::int64_t i : grid_stride(n4)) {
    const float4 v = x[i];
    y[i] = make_float4(leaky(v.x, slope), leaky(v.y, slope), leaky(v.z, slope), leaky(v.w, slope));
  }
}

// Any storage type (precision.cuh), computed in float.
template <class T>
__global__ void relu_scalar(const T* x, T* y, std::int64_t n, float slope) {
  for (std::int64_t i : grid_stride(n)) {
    y[i] = from_float<T>(leaky(to_float(x[i]), slope));
  }
}

// dx += dy where the input was positive, slope · dy elsewhere; with `overwrite` (dx is dy's memory,
// Layer::backward_in_place) dx = 0 + that. Each thread reads and writes only its own elements.
template <class T>
__global__ void relu_backward(const T* x, const T* dy, T* dx, std::int64_t n, float slope, bool overwrite) {
  for (std::int64_t i : grid_stride(n)) {
    const float g = to_float(dy[i]);
    dx[i] = from_float<T>((overwrite ? 0.0f : to_float(dx[i])) + (to_float(x[i]) > 0.0f ? g : slope * g));
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// T: the storage type (float, or __half / __nv_bfloat16 for make_lowp_relu).
template <class T>
class ReLUKernel final : public CudaKernel {
 public:
  ReLUKernel(float slope, StreamContext& context) : CudaKernel(context), slope_(slope) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const auto* x = static_cast<const T*>(inputs[0].raw());
    auto* y = static_cast<T*>(outputs[0].raw());
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    std::int64_t done = 0;
    if constexpr (std::is_same_v<T, float>) {
      if (aligned16(x) && aligned16(y) && n >= 4) {
        const std::int64_t n4 = n / 4;
        launch(context_, n4, relu_vec4, reinterpret_cast<const float4*>(x), reinterpret_cast<float4*>(y), n4,
               slope_);
        done = n4 * 4;
      }
    }
    if (done < n) {
      launch(context_, n - done, relu_scalar<T>, x + done, y + done, n - done, slope_);
    }
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    const auto* dy = static_cast<const T*>(output_grads[0].raw());
    auto* dx = static_cast<T*>(input_grads[0].raw());
    launch(context_, n, relu_backward<T>, static_cast<const T*>(inputs[0].raw()), dy, dx, n, slope_,
           dx == dy);
  }
  bool backward_in_place(const Layer& layer) const override { return layer.backward_in_place(); }

 private:
  float slope_;
};

}  // namespace

std::unique_ptr<Kernel> make_lowp_relu(const Layer& layer, const std::vector<Shape>&, DType dtype,
                                       StreamContext& context) {
  std::unique_ptr<Kernel> kernel;
  with_storage_type(dtype, "ReLU", [&](auto type) {
    kernel = std::make_unique<ReLUKernel<decltype(type)>>(
        static_cast<const ReLULayer&>(layer).negative_slope(), context);
  });
  return kernel;
}

std::unique_ptr<Kernel> make_relu(const Layer& layer, const std::vector<Shape>&, StreamContext& context) {
  return std::make_unique<ReLUKernel<float>>(static_cast<const ReLULayer&>(layer).negative_slope(), context);
}

}  // namespace espresso::cuda
