// Normalize on the GPU: a block per group (NormalizeExtent) reduces Σ x² and, backward, Σ s·dy·x
// with block_sum, then every thread maps its share of the group.
#include <algorithm>

#include "backends/cuda/block_sum.cuh"
#include "backends/cuda/check.h"
#include "backends/cuda/kernels.h"
#include "layers/normalize.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;
constexpr long long kMaxBlocks = 4096;

// NormalizeExtent's indexing, on the device.
__device__ long long group_offset(const NormalizeExtent& e, long long g, long long k) {
  return e.across_spatial ? g * e.channels * e.spatial + k : (g / e.spatial * e.channels + k) * e.spatial + g % e.spatial;
}
__device__ long long scale_index(const NormalizeExtent& e, long long k) {
  return e.channel_shared ? 0 : e.across_spatial ? k / e.spatial : k;
}
__device__ long long group_count(const NormalizeExtent& e) { return e.across_spatial ? e.samples : e.samples * e.spatial; }
__device__ long long group_length(const NormalizeExtent& e) {
  return e.across_spatial ? e.channels * e.spatial : e.channels;
}

// sqrt(Σ x² + eps) over group g, returned to every thread of the block.
__device__ float group_norm(const float* x, const NormalizeExtent& e, long long g, float eps) {
  float sum = 0.0f;
  for (long long k = threadIdx.x; k < group_length(e); k += blockDim.x) {
    const float v = x[group_offset(e, g, k)];
    sum += v * v;
  }
  return sqrtf(block_sum<kThreads>(sum) + eps);
}

__global__ void normalize_forward(const float* __restrict__ x, const float* __restrict__ scale,
                                  float* __restrict__ y, NormalizeExtent e, float eps) {
  for (long long g = blockIdx.x; g < group_count(e); g += gridDim.x) {
    const float norm = group_norm(x, e, g, eps);
    for (long long k = threadIdx.x; k < group_length(e); k += blockDim.x) {
      const long long at = group_offset(e, g, k);
      y[at] = scale[scale_index(e, k)] * x[at] / norm;
    }
  }
}

// dx += s·dy / n − x / n³ · Σ s·dy·x; dscale[c] += Σ dy·x / n (atomically: groups share channels).
__global__ void normalize_backward(const float* __restrict__ x, const float* __restrict__ scale,
                                   const float* __restrict__ dy, float* __restrict__ dx,
                                   float* __restrict__ dscale, NormalizeExtent e, float eps) {
  for (long long g = blockIdx.x; g < group_count(e); g += gridDim.x) {
    const float norm = group_norm(x, e, g, eps);
    float dot = 0.0f;
    float shared_grad = 0.0f;
    for (long long k = threadIdx.x; k < group_length(e); k += blockDim.x) {
      const long long at = group_offset(e, g, k);
      dot += scale[scale_index(e, k)] * dy[at] * x[at];
      if (dscale == nullptr) continue;
      if (e.channel_shared) {
        shared_grad += dy[at] * x[at] / norm;
      } else {
        atomicAdd(&dscale[scale_index(e, k)], dy[at] * x[at] / norm);
      }
    }
    dot = block_sum<kThreads>(dot);
    if (dscale != nullptr && e.channel_shared) {
      shared_grad = block_sum<kThreads>(shared_grad);
      if (threadIdx.x == 0) atomicAdd(dscale, shared_grad);
    }
    if (dx == nullptr) continue;
    const float norm3 = norm * norm * norm;
    for (long long k = threadIdx.x; k < group_length(e); k += blockDim.x) {
      const long long at = group_offset(e, g, k);
      dx[at] += scale[scale_index(e, k)] * dy[at] / norm - x[at] * dot / norm3;
    }
  }
}

class NormalizeKernel final : public Kernel {
 public:
  NormalizeKernel(const NormalizeExtent& extent, const float* scale, float eps, StreamContext& context)
      : extent_(extent), scale_(scale), eps_(eps), context_(context) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (extent_.groups() == 0 || extent_.group_size() == 0) return;
    normalize_forward<<<blocks(), kThreads, 0, context_.stream()>>>(inputs[0].data<float>(), scale_,
                                                                    outputs[0].data<float>(), extent_, eps_);
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    float* dx = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
    float* dscale = weight_grads[0].defined() ? weight_grads[0].data<float>() : nullptr;
    if (extent_.groups() == 0 || extent_.group_size() == 0 || (dx == nullptr && dscale == nullptr)) return;
    normalize_backward<<<blocks(), kThreads, 0, context_.stream()>>>(
        inputs[0].data<float>(), scale_, output_grads[0].data<float>(), dx, dscale, extent_, eps_);
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
  }
  bool has_fast_backward() const override { return true; }
  const char* name() const override { return "cuda"; }

 private:
  unsigned blocks() const { return static_cast<unsigned>(std::min<long long>(extent_.groups(), kMaxBlocks)); }

  NormalizeExtent extent_;
  const float* scale_;
  float eps_;
  StreamContext& context_;
};

}  // namespace

std::unique_ptr<Kernel> make_normalize(const Layer& layer, const std::vector<Shape>& inputs,
                                       StreamContext& context) {
  const auto& normalize = static_cast<const NormalizeLayer&>(layer);
  const float* scale = context.device_weights(layer.weights()[0], "layer '" + layer.name() + "'").data<float>();
  return std::make_unique<NormalizeKernel>(normalize.extent(inputs[0]), scale, normalize.eps(), context);
}

}  // namespace espresso::cuda
