// Binary on the GPU: one kernel for every operation, reading both operands through broadcast
// strides (0 along the axes an operand stretches over).
#include "backends/cuda/index_map.cuh"
#include "backends/cuda/kernels.h"
#include "layers/binary.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float apply(BinaryLayer::Op op, float a, float b) {
  switch (op) {
    case BinaryLayer::Op::add:
      return a + b;
    case BinaryLayer::Op::sub:
      return a - b;
    case BinaryLayer::Op::mul:
      return a * b;
    case BinaryLayer::Op::div:
      return a / b;
    case BinaryLayer::Op::max:
      return fmaxf(a, b);
    case BinaryLayer::Op::min:
      return fminf(a, b);
    case BinaryLayer::Op::pow:
      return powf(a, b);
  }
  return 0.0f;
}

__global__ void broadcast_binary(const float* a, const float* b, float* y, long long n, StridedDims sa,
                                 StridedDims sb, BinaryLayer::Op op) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    y[i] = apply(op, a[strided_offset(sa, i)], b[strided_offset(sb, i)]);
  }
}

// Strides of `shape` laid against `out` (aligned at the last axis), 0 where it broadcasts.
std::vector<std::int64_t> broadcast_strides(const Shape& shape, const Shape& out) {
  std::vector<std::int64_t> strides(static_cast<std::size_t>(out.rank()), 0);
  std::int64_t stride = 1;
  for (int i = shape.rank() - 1, o = out.rank() - 1; i >= 0; --i, --o) {
    if (shape[i] != 1) strides[static_cast<std::size_t>(o)] = stride;
    stride *= shape[i];
  }
  return strides;
}

class BinaryKernel final : public Kernel {
 public:
  BinaryKernel(StridedDims a, StridedDims b, BinaryLayer::Op op, StreamContext& context)
      : a_(a), b_(b), op_(op), context_(context) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    // No __restrict__: the executor may run the layer in place on input 0.
    broadcast_binary<<<elementwise_blocks(context_, n, kThreads), kThreads, 0, context_.stream()>>>(
        inputs[0].data<float>(), inputs[1].data<float>(), outputs[0].data<float>(), n, a_, b_, op_);
    ESPRESSO_CUDA_CHECK(cudaGetLastError());
  }
  const char* name() const override { return "cuda"; }

 private:
  StridedDims a_, b_;
  BinaryLayer::Op op_;
  StreamContext& context_;
};

}  // namespace

std::unique_ptr<Kernel> make_binary(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context) {
  const Shape out = layer.output_shapes(inputs)[0];
  if (!fits_rank(static_cast<std::size_t>(out.rank()))) return nullptr;
  return std::make_unique<BinaryKernel>(strided_dims(out.dims(), broadcast_strides(inputs[0], out)),
                                        strided_dims(out.dims(), broadcast_strides(inputs[1], out)),
                                        static_cast<const BinaryLayer&>(layer).op(), context);
}

}  // namespace espresso::cuda
