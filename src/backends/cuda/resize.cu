// Resize on the GPU: the layer's per-axis taps (input indices and weights of every output
// coordinate) are uploaded once; each output element sums the products of its axes' taps.
// Backward runs the same walk and scatters each output's gradient to its taps with atomic adds,
// since neighbouring outputs share input elements.
#include "backends/cuda/index_map.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/resize.h"

namespace espresso::cuda {
namespace {

struct ResizeGeometry {
  int rank;
  long long in[kMaxRank], out[kMaxRank];
  int taps[kMaxRank];
  long long table[kMaxRank];  // where the axis's taps start in the index and weight tables
  long long combinations;
};

// The first entry in the tap tables of each axis for output element i; false when i lies outside
// a tf_crop_and_resize region.
__device__ bool output_taps(const ResizeGeometry& g, const long long* __restrict__ indices, long long i,
                            long long first_tap[kMaxRank]) {
  bool inside = true;
  for (int a = g.rank - 1; a >= 0; --a) {
    first_tap[a] = g.table[a] + i % g.out[a] * g.taps[a];
    i /= g.out[a];
    inside = inside && indices[first_tap[a]] >= 0;
  }
  return inside;
}

// The input offset and weight of one combination of the axes' taps.
__device__ double combination_tap(const ResizeGeometry& g, const long long* __restrict__ indices,
                                  const float* __restrict__ weights, const long long first_tap[kMaxRank],
                                  long long combination, long long& offset) {
  double w = 1;
  long long stride = 1;
  offset = 0;
  for (int a = g.rank - 1; a >= 0; --a) {
    const long long tap = first_tap[a] + combination % g.taps[a];
    combination /= g.taps[a];
    w *= weights[tap];
    offset += indices[tap] * stride;
    stride *= g.in[a];
  }
  return w;
}

__global__ void resize_elements(const float* __restrict__ x, float* __restrict__ y, long long n,
                                const long long* __restrict__ indices, const float* __restrict__ weights,
                                ResizeGeometry g, float outside_value) {
  for (long long i : grid_stride(n)) {
    long long first_tap[kMaxRank];
    const bool inside = output_taps(g, indices, i, first_tap);
    double sum = 0;
    for (long long c = 0; c < g.combinations && inside; ++c) {
      long long offset;
      const double w = combination_tap(g, indices, weights, first_tap, c, offset);
      if (w != 0) sum += w * x[offset];
    }
    y[i] = inside ? static_cast<float>(sum) : outside_value;
  }
}

__global__ void resize_elements_backward(const float* __restrict__ dy, float* __restrict__ dx, long long n,
                                         const long long* __restrict__ indices,
                                         const float* __restrict__ weights, ResizeGeometry g) {
  for (long long i : grid_stride(n)) {
    long long first_tap[kMaxRank];
    if (!output_taps(g, indices, i, first_tap)) continue;
    const double gradient = dy[i];
    for (long long c = 0; c < g.combinations; ++c) {
      long long offset;
      const double w = combination_tap(g, indices, weights, first_tap, c, offset);
      if (w != 0) atomicAdd(dx + offset, static_cast<float>(w * gradient));
    }
  }
}

class ResizeKernel final : public CudaKernel {
 public:
  ResizeKernel(ResizeGeometry geometry, Tensor indices, Tensor weights, float outside_value,
               StreamContext& context)
      : CudaKernel(context),
        geometry_(geometry),
        indices_(std::move(indices)),
        weights_(std::move(weights)),
        outside_value_(outside_value) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    launch(context_, n, resize_elements, inputs[0].data<float>(), outputs[0].data<float>(), n,
           reinterpret_cast<const long long*>(indices_.data<std::int64_t>()), weights_.data<float>(),
           geometry_, outside_value_);
  }

  void backward(const Layer&, const std::vector<Tensor>&, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    launch(context_, n, resize_elements_backward, output_grads[0].data<float>(), input_grads[0].data<float>(),
           n, reinterpret_cast<const long long*>(indices_.data<std::int64_t>()), weights_.data<float>(),
           geometry_);
  }

 private:
  ResizeGeometry geometry_;
  Tensor indices_, weights_;  // on the device; weights in fp32
  float outside_value_;
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
