// ReLU on the GPU, forward and backward, any storage type (precision.cuh) computed in float: each thread
// reads and writes packs of 16 bytes where the buffers allow (channel_packs.cuh), single elements
// otherwise. Scalar 2-byte accesses had made NIN's fp16 / bf16 ReLUs a seventh of its training step.
#include <cstdint>
#include <type_traits>

#include "backends/cuda/channel_packs.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"
#include "layers/relu.h"

namespace espresso::cuda {
namespace {

__device__ float leaky(float x, float slope) { return x > 0.0f ? x : slope * x; }

template <class T, int kVec>
__global__ void relu_forward(const T* x, T* y, std::int64_t n, float slope) {
  for_each_flat_pack<kVec>(n, [&](std::int64_t i, int count) {
    Pack<T, kVec> v = load_pack<kVec>(x + i, count);
    for (int j = 0; j < kVec; ++j) v.v[j] = from_float<T>(leaky(to_float(v.v[j]), slope));
    store_pack<kVec>(y + i, v, count);
  });
}

// dx += dy where the input was positive, slope · dy elsewhere; with `overwrite` (dx is dy's memory,
// Layer::backward_in_place) dx = 0 + that. Each thread reads and writes only its own elements.
template <class T, int kVec>
__global__ void relu_backward(const T* x, const T* dy, T* dx, std::int64_t n, float slope, bool overwrite) {
  for_each_flat_pack<kVec>(n, [&](std::int64_t i, int count) {
    const Pack<T, kVec> xs = load_pack<kVec>(x + i, count), gs = load_pack<kVec>(dy + i, count);
    Pack<T, kVec> out = overwrite ? Pack<T, kVec>{} : load_pack<kVec>(dx + i, count);
    for (int j = 0; j < kVec; ++j) {
      const float g = to_float(gs.v[j]);
      out.v[j] =
          from_float<T>((overwrite ? 0.0f : to_float(out.v[j])) + (to_float(xs.v[j]) > 0.0f ? g : slope * g));
    }
    store_pack<kVec>(dx + i, out, count);
  });
}

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
    with_pack_width<T>({x, y}, [&](auto width) {
      constexpr int kVec = decltype(width)::value;
      launch(context_, (n + kVec - 1) / kVec, relu_forward<T, kVec>, x, y, n, slope_);
    });
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    const auto* x = static_cast<const T*>(inputs[0].raw());
    const auto* dy = static_cast<const T*>(output_grads[0].raw());
    auto* dx = static_cast<T*>(input_grads[0].raw());
    with_pack_width<T>({x, dy, dx}, [&](auto width) {
      constexpr int kVec = decltype(width)::value;
      launch(context_, (n + kVec - 1) / kVec, relu_backward<T, kVec>, x, dy, dx, n, slope_, dx == dy);
    });
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
