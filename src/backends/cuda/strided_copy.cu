// Transpose and StridedSlice on the GPU: both read the input through per-axis strides (permuted
// for Transpose; scaled by the step, possibly negative, for StridedSlice) from a start offset.
// Distinct outputs read distinct inputs, so backward adds each output's gradient back to the
// element it read without atomics.
#include "backends/cuda/index_map.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/strided_slice.h"
#include "layers/transpose.h"

namespace espresso::cuda {
namespace {

__global__ void strided_gather(const float* __restrict__ x, float* __restrict__ y, long long n,
                               long long base, StridedDims source) {
  for (long long i : grid_stride(n)) {
    y[i] = x[base + strided_offset(source, i)];
  }
}

__global__ void strided_scatter_add(const float* __restrict__ dy, float* __restrict__ dx, long long n,
                                    long long base, StridedDims source) {
  for (long long i : grid_stride(n)) {
    dx[base + strided_offset(source, i)] += dy[i];
  }
}

class StridedCopyKernel final : public CudaKernel {
 public:
  StridedCopyKernel(long long base, StridedDims source, StreamContext& context)
      : CudaKernel(context), base_(base), source_(source) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    launch(context_, n, strided_gather, inputs[0].data<float>(), outputs[0].data<float>(), n, base_, source_);
  }
  void backward(const Layer&, const std::vector<Tensor>&, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    launch(context_, n, strided_scatter_add, output_grads[0].data<float>(), input_grads[0].data<float>(), n,
           base_, source_);
  }

 private:
  long long base_;
  StridedDims source_;
};

}  // namespace

std::unique_ptr<Kernel> make_strided_slice(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context) {
  const Shape& in = inputs[0];
  if (!fits_rank(static_cast<std::size_t>(in.rank()))) return nullptr;
  std::vector<std::int64_t> first, step, count;
  static_cast<const StridedSliceLayer&>(layer).resolve(in, first, step, count);
  const std::vector<std::int64_t> in_strides = contiguous_strides(in.dims());
  std::vector<std::int64_t> strides(in_strides.size());
  long long base = 0;
  for (std::size_t k = 0; k < in_strides.size(); ++k) {
    base += first[k] * in_strides[k];
    strides[k] = step[k] * in_strides[k];
  }
  return std::make_unique<StridedCopyKernel>(base, strided_dims(count, strides), context);
}

std::unique_ptr<Kernel> make_transpose(const Layer& layer, const std::vector<Shape>& inputs,
                                       StreamContext& context) {
  const Shape& in = inputs[0];
  if (!fits_rank(static_cast<std::size_t>(in.rank()))) return nullptr;
  const std::vector<int> perm = static_cast<const TransposeLayer&>(layer).permutation(in.rank());
  const std::vector<std::int64_t> in_strides = contiguous_strides(in.dims());
  std::vector<std::int64_t> sizes, strides;
  for (int axis : perm) {
    sizes.push_back(in[axis]);
    strides.push_back(in_strides[static_cast<std::size_t>(axis)]);
  }
  return std::make_unique<StridedCopyKernel>(0, strided_dims(sizes, strides), context);
}

}  // namespace espresso::cuda
