// Pad on the GPU: each output element finds its source per axis (constant, edge or reflect).
#include "backends/cuda/index_map.cuh"
#include "backends/cuda/kernels.h"
#include "layers/pad.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;

struct PadGeometry {
  int rank;
  long long in[kMaxRank], out[kMaxRank], begin[kMaxRank];
};

__global__ void pad_elements(const float* __restrict__ x, float* __restrict__ y, long long n, PadGeometry g,
                             PadLayer::Mode mode, float value) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    long long rest = i, offset = 0, stride = 1;
    bool outside = false;
    for (int k = g.rank - 1; k >= 0; --k) {
      long long source = rest % g.out[k] - g.begin[k];
      rest /= g.out[k];
      const long long size = g.in[k];
      if (source < 0 || source >= size) {
        if (mode == PadLayer::Mode::constant) {
          outside = true;
        } else if (mode == PadLayer::Mode::edge) {
          source = source < 0 ? 0 : size - 1;
        } else {
          source = source < 0 ? -source : 2 * (size - 1) - source;
        }
      }
      offset += source * stride;
      stride *= size;
    }
    y[i] = outside ? value : x[offset];
  }
}

class PadKernel final : public Kernel {
 public:
  PadKernel(PadGeometry geometry, PadLayer::Mode mode, float value, StreamContext& context)
      : geometry_(geometry), mode_(mode), value_(value), context_(context) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    pad_elements<<<elementwise_blocks(context_, n, kThreads), kThreads, 0, context_.stream()>>>(
        inputs[0].data<float>(), outputs[0].data<float>(), n, geometry_, mode_, value_);
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
  }
  const char* name() const override { return "cuda"; }

 private:
  PadGeometry geometry_;
  PadLayer::Mode mode_;
  float value_;
  StreamContext& context_;
};

}  // namespace

std::unique_ptr<Kernel> make_pad(const Layer& layer, const std::vector<Shape>& inputs,
                                 StreamContext& context) {
  const auto& pad = static_cast<const PadLayer&>(layer);
  const Shape& in = inputs[0];
  if (!fits_rank(static_cast<std::size_t>(in.rank()))) return nullptr;
  const Shape out = layer.output_shapes(inputs)[0];
  PadGeometry g{};
  g.rank = in.rank();
  for (int k = 0; k < in.rank(); ++k) {
    g.in[k] = in[k];
    g.out[k] = out[k];
    g.begin[k] = pad.pads()[static_cast<std::size_t>(k)];
  }
  return std::make_unique<PadKernel>(g, pad.mode(), pad.value(), context);
}

}  // namespace espresso::cuda
