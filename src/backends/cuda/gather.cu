// Gather on the GPU: a thread per output element reads its index from the device copy of input 1,
// in forward to copy its element and in backward to add its gradient back.
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/gather.h"

namespace espresso::cuda {
namespace {

// Indices are whole numbers stored as floats, as on the CPU; negative ones count from the end. One
// outside the axis comes back as -1: the GPU cannot raise the reference's ShapeError without a
// synchronisation in every forward, so forward yields NaN there and backward skips it.
__device__ long long resolve_index(float stored, long long size) {
  long long index = llroundf(stored);
  if (index < 0) index += size;
  return index >= 0 && index < size ? index : -1;
}

__global__ void gather_slices(const float* __restrict__ x, const float* __restrict__ indices,
                              float* __restrict__ y, long long n, long long count, long long size,
                              long long inner) {
  for (long long i : grid_stride(n)) {
    const long long within = i % inner, j = i / inner % count, outer = i / inner / count;
    const long long index = resolve_index(indices[j], size);
    y[i] = index >= 0 ? x[(outer * size + index) * inner + within] : NAN;
  }
}

// Each output sends its gradient back to the element it copied; repeated indices make several
// outputs add into one element, hence the atomics.
__global__ void scatter_slices(const float* __restrict__ dy, const float* __restrict__ indices,
                               float* __restrict__ dx, long long n, long long count, long long size,
                               long long inner) {
  for (long long i : grid_stride(n)) {
    const long long within = i % inner, j = i / inner % count, outer = i / inner / count;
    const long long index = resolve_index(indices[j], size);
    if (index >= 0) atomicAdd(dx + (outer * size + index) * inner + within, dy[i]);
  }
}

class GatherKernel final : public CudaKernel {
 public:
  GatherKernel(std::int64_t size, std::int64_t inner, StreamContext& context)
      : CudaKernel(context), size_(size), inner_(inner) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    launch(context_, n, gather_slices, inputs[0].data<float>(), inputs[1].data<float>(),
           outputs[0].data<float>(), n, inputs[1].numel(), size_, inner_);
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    launch(context_, n, scatter_slices, output_grads[0].data<float>(), inputs[1].data<float>(),
           input_grads[0].data<float>(), n, inputs[1].numel(), size_, inner_);
  }

 private:
  std::int64_t size_, inner_;
};

}  // namespace

std::unique_ptr<Kernel> make_gather(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context) {
  layer.output_shapes(inputs);  // validates the axis
  const Shape& data = inputs[0];
  const int axis = data.canonical_axis(static_cast<const GatherLayer&>(layer).axis());
  return std::make_unique<GatherKernel>(data[axis], data.count(axis + 1), context);
}

}  // namespace espresso::cuda
