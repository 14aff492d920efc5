// LRN on the GPU: a thread per output sums the squares of its window, in the reference's order.
#include "backends/cuda/kernels.h"
#include "layers/lrn.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;

struct Normalisation {
  long long total;
  int channels, size, before;
  long long spatial;  // across: positions per channel
  int height, width;  // within
  float scale, k, beta;
};

__global__ void lrn_across(Normalisation p, const float* __restrict__ x, float* __restrict__ y) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < p.total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long position = i % p.spatial;
    const int c = static_cast<int>(i / p.spatial % p.channels);
    const long long image = i / p.spatial / p.channels;
    const int first = max(c - p.before, 0);
    const int last = min(c - p.before + p.size, p.channels);
    float sum = 0.0f;
    for (int j = first; j < last; ++j) {
      const float v = x[(image * p.channels + j) * p.spatial + position];
      sum += v * v;
    }
    y[i] = x[i] * powf(p.k + p.scale * sum, -p.beta);
  }
}

__global__ void lrn_within(Normalisation p, const float* __restrict__ x, float* __restrict__ y) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < p.total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int w = static_cast<int>(i % p.width);
    const int h = static_cast<int>(i / p.width % p.height);
    const float* plane = x + (i / (static_cast<long long>(p.width) * p.height)) * p.width * p.height;
    float sum = 0.0f;
    for (int r = max(h - p.before, 0); r < min(h - p.before + p.size, p.height); ++r) {
      for (int c = max(w - p.before, 0); c < min(w - p.before + p.size, p.width); ++c) {
        const float v = plane[r * p.width + c];
        sum += v * v;
      }
    }
    y[i] = x[i] * powf(1.0f + p.scale * sum, -p.beta);
  }
}

class LRNKernel final : public Kernel {
 public:
  LRNKernel(const Normalisation& params, bool across, StreamContext& context)
      : params_(params), across_(across), context_(context) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (params_.total == 0) return;
    const unsigned blocks = elementwise_blocks(context_, params_.total, kThreads);
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    if (across_) {
      lrn_across<<<blocks, kThreads, 0, context_.stream()>>>(params_, x, y);
    } else {
      lrn_within<<<blocks, kThreads, 0, context_.stream()>>>(params_, x, y);
    }
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
  }
  const char* name() const override { return across_ ? "cuda-across" : "cuda-within"; }

 private:
  Normalisation params_;
  bool across_;
  StreamContext& context_;
};

}  // namespace

std::unique_ptr<Kernel> make_lrn(const Layer& layer, const std::vector<Shape>& inputs,
                                 StreamContext& context) {
  const auto& lrn = static_cast<const LRNLayer&>(layer);
  const Shape& shape = inputs[0];
  Normalisation p{};
  p.total = shape.numel();
  p.channels = static_cast<int>(shape[1]);
  p.size = static_cast<int>(lrn.size());
  p.before = static_cast<int>(lrn.before());
  p.beta = lrn.beta();
  if (lrn.across_channels()) {
    p.spatial = shape.count(2);
    p.scale = lrn.alpha() / static_cast<float>(lrn.size());
    p.k = lrn.k();
  } else {
    p.height = static_cast<int>(shape[2]);
    p.width = static_cast<int>(shape[3]);
    p.scale = lrn.alpha() / static_cast<float>(lrn.size() * lrn.size());
  }
  return std::make_unique<LRNKernel>(p, lrn.across_channels(), context);
}

}  // namespace espresso::cuda
