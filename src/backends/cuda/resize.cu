// Resize on the GPU: the layer's per-axis taps (input indices and weights of every output
// coordinate) are uploaded once; each output element sums the products of its axes' taps.
#include "backends/cuda/index_map.cuh"
#include "backends/cuda/kernels.h"
#include "layers/resize.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;

struct ResizeGeometry {
  int rank;
  long long in[kMaxRank], out[kMaxRank];
  int taps[kMaxRank];
  long long table[kMaxRank];  // where the axis's taps start in the index and weight tables
  long long combinations;
};

__global__ void resize_elements(const float* __restrict__ x, float* __restrict__ y, long long n,
                                const long long* __restrict__ indices, const float* __restrict__ weights,
                                ResizeGeometry g, float outside_value) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    long long first_tap[kMaxRank];
    long long rest = i;
    bool outside = false;
    for (int a = g.rank - 1; a >= 0; --a) {
      first_tap[a] = g.table[a] + rest % g.out[a] * g.taps[a];
      rest /= g.out[a];
      outside = outside || indices[first_tap[a]] < 0;
    }
    double sum = 0;
    for (long long c = 0; c < g.combinations && !outside; ++c) {
      double w = 1;
      long long offset = 0, stride = 1, choice = c;
      for (int a = g.rank - 1; a >= 0; --a) {
        const long long tap = first_tap[a] + choice % g.taps[a];
        choice /= g.taps[a];
        w *= weights[tap];
        offset += indices[tap] * stride;
        stride *= g.in[a];
      }
      if (w != 0) sum += w * x[offset];
    }
    y[i] = outside ? outside_value : static_cast<float>(sum);
  }
}

class ResizeKernel final : public Kernel {
 public:
  ResizeKernel(ResizeGeometry geometry, Tensor indices, Tensor weights, float outside_value,
               StreamContext& context)
      : geometry_(geometry),
        indices_(std::move(indices)),
        weights_(std::move(weights)),
        outside_value_(outside_value),
        context_(context) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    resize_elements<<<elementwise_blocks(context_, n, kThreads), kThreads, 0, context_.stream()>>>(
        inputs[0].data<float>(), outputs[0].data<float>(), n,
        reinterpret_cast<const long long*>(indices_.data<std::int64_t>()), weights_.data<float>(), geometry_,
        outside_value_);
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
  }
  const char* name() const override { return "cuda"; }

 private:
  ResizeGeometry geometry_;
  Tensor indices_, weights_;  // on the device; weights in fp32
  float outside_value_;
  StreamContext& context_;
};

}  // namespace

std::unique_ptr<Kernel> make_resize(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context) {
  const auto& resize = static_cast<const ResizeLayer&>(layer);
  const Shape& in = inputs[0];
  if (!fits_rank(static_cast<std::size_t>(in.rank()))) return nullptr;
  const Shape out = layer.output_shapes(inputs)[0];
  const std::vector<ResizeLayer::AxisTaps> taps = resize.taps(in, out);
  ResizeGeometry g{};
  g.rank = in.rank();
  g.combinations = 1;
  std::vector<std::int64_t> indices;
  std::vector<float> weights;
  for (int a = 0; a < in.rank(); ++a) {
    const ResizeLayer::AxisTaps& t = taps[static_cast<std::size_t>(a)];
    g.in[a] = in[a];
    g.out[a] = out[a];
    g.taps[a] = t.count;
    g.table[a] = static_cast<long long>(indices.size());
    g.combinations *= t.count;
    indices.insert(indices.end(), t.index.begin(), t.index.end());
    for (double w : t.weight) weights.push_back(static_cast<float>(w));
  }
  // Never empty, so that the device tables always have an address.
  indices.push_back(0);
  weights.push_back(0);
  const Shape index_shape{static_cast<std::int64_t>(indices.size())};
  Tensor host_indices = Tensor::wrap(indices.data(), index_shape, DType::i64);
  Tensor host_weights = Tensor::wrap(weights.data(), index_shape, DType::f32);
  return std::make_unique<ResizeKernel>(g, host_indices.to(context.device()),
                                        host_weights.to(context.device()), resize.extrapolation_value(),
                                        context);
}

}  // namespace espresso::cuda
