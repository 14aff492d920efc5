// Pad on the GPU: each output element finds its source per axis (constant, edge or reflect); backward
// adds each output's gradient back to its source.
#include "backends/cuda/index_map.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"
#include "layers/pad.h"

namespace espresso::cuda {
namespace {

struct PadGeometry {
  int rank;
  long long in[kMaxRank], out[kMaxRank], begin[kMaxRank];
};

// The input element output i reads, or -1 where constant padding fills it (PadLayer's index map).
__device__ long long pad_source(const PadGeometry& g, PadLayer::Mode mode, long long i) {
  long long rest = i, offset = 0, stride = 1;
  for (int k = g.rank - 1; k >= 0; --k) {
    long long source = rest % g.out[k] - g.begin[k];
    rest /= g.out[k];
    const long long size = g.in[k];
    if (source < 0 || source >= size) {
      if (mode == PadLayer::Mode::constant) return -1;
      if (mode == PadLayer::Mode::edge) {
        source = source < 0 ? 0 : size - 1;
      } else {
        source = source < 0 ? -source : 2 * (size - 1) - source;
      }
    }
    offset += source * stride;
    stride *= size;
  }
  return offset;
}

// T: the storage type (precision.cuh).
template <class T>
__global__ void pad_elements(const T* __restrict__ x, T* __restrict__ y, long long n, PadGeometry g,
                             PadLayer::Mode mode, float value) {
  for (long long i : grid_stride(n)) {
    const long long source = pad_source(g, mode, i);
    y[i] = source < 0 ? from_float<T>(value) : x[source];
  }
}

// Each output adds its gradient to the element it read. Edge and reflect padding read some inputs
// several times, hence the atomics; constant padding reads each at most once.
__global__ void pad_gradient(const float* __restrict__ dy, float* __restrict__ dx, long long n, PadGeometry g,
                             PadLayer::Mode mode) {
  for (long long i : grid_stride(n)) {
    const long long source = pad_source(g, mode, i);
    if (source >= 0) atomicAdd(dx + source, dy[i]);
  }
}

// `dtype`: the storage type of x and y; f16 and bf16 at inference, which has no backward.
class PadKernel final : public CudaKernel {
 public:
  PadKernel(PadGeometry geometry, PadLayer::Mode mode, float value, DType dtype, StreamContext& context)
      : CudaKernel(context), geometry_(geometry), mode_(mode), value_(value), dtype_(dtype) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    with_storage_type(dtype_, "Pad", [&](auto type) {
      using T = decltype(type);
      launch(context_, n, pad_elements<T>, static_cast<const T*>(inputs[0].raw()),
             static_cast<T*>(outputs[0].raw()), n, geometry_, mode_, value_);
    });
  }
  bool has_fast_backward() const override { return dtype_ == DType::f32; }
  void backward(const Layer&, const std::vector<Tensor>&, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    launch(context_, n, pad_gradient, output_grads[0].data<float>(), input_grads[0].data<float>(), n,
           geometry_, mode_);
  }

 private:
  PadGeometry geometry_;
  PadLayer::Mode mode_;
  float value_;
  DType dtype_;
};

std::unique_ptr<Kernel> pad_kernel(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
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
  return std::make_unique<PadKernel>(g, pad.mode(), pad.value(), dtype, context);
}

}  // namespace

std::unique_ptr<Kernel> make_pad(const Layer& layer, const std::vector<Shape>& inputs,
                                 StreamContext& context) {
  return pad_kernel(layer, inputs, DType::f32, context);
}

std::unique_ptr<Kernel> make_lowp_pad(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                      StreamContext& context) {
  return pad_kernel(layer, inputs, dtype, context);
}

}  // namespace espresso::cuda
