// Reduce on the GPU: a warp per output element walks the reduced axes (any subset) and combines
// its partial results with shuffles; accumulation is in double, as in the reference. Backward keeps
// the layout: the warp of an output writes the gradients of its own elements, so no two threads
// add into one element.
#include "backends/cuda/index_map.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/reduce.h"

namespace espresso::cuda {
namespace {

using Op = ReduceLayer::Op;

__device__ double combine(Op op, double a, double b) {
  switch (op) {
    case Op::max:
      return fmax(a, b);
    case Op::min:
      return fmin(a, b);
    case Op::prod:
      return a * b;
    default:
      return a + b;
  }
}

__device__ double term(Op op, double v) {
  switch (op) {
    case Op::sum_square:
    case Op::l2:
      return v * v;
    case Op::l1:
      return fabs(v);
    case Op::log_sum_exp:
      return exp(v);
    default:
      return v;
  }
}

__global__ void reduce_groups(const float* __restrict__ x, float* __restrict__ y, long long outputs,
                              long long group, StridedDims kept, StridedDims reduced, Op op, double init) {
  const int lane = threadIdx.x % kWarp;
  for (long long o : warp_stride(outputs)) {
    const long long base = strided_offset(kept, o);
    double acc = init;
    for (long long j = lane; j < group; j += kWarp)
      acc = combine(op, acc, term(op, x[base + strided_offset(reduced, j)]));
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
      acc = combine(op, acc, __shfl_xor_sync(0xffffffffu, acc, offset));
    if (lane != 0) continue;
    if (op == Op::mean) acc /= static_cast<double>(group);
    if (op == Op::l2) acc = sqrt(acc);
    if (op == Op::log_sum || op == Op::log_sum_exp) acc = log(acc);
    y[o] = static_cast<float>(acc);
  }
}

// d output / d element v of an output `result` over `group` elements; for prod, the group has
// `zeros` zero elements and the product of the others is `nonzero_product`.
__device__ double partial(Op op, double v, float result, long long group, long long zeros,
                          double nonzero_product) {
  switch (op) {
    case Op::mean:
      return 1.0 / static_cast<double>(group);
    case Op::prod:
      if (v != 0) return zeros == 0 ? nonzero_product / v : 0.0;
      return zeros == 1 ? nonzero_product : 0.0;
    case Op::sum_square:
      return 2 * v;
    case Op::l1:
      return v > 0 ? 1.0 : v < 0 ? -1.0 : 0.0;
    case Op::l2:
      return result > 0 ? v / result : 0.0;
    case Op::log_sum:  // 1 / Σx
      return exp(-static_cast<double>(result));
    case Op::log_sum_exp:
      return exp(v - result);
    default:  // sum
      return 1.0;
  }
}

__global__ void reduce_groups_backward(const float* __restrict__ x, const float* __restrict__ y,
                                       const float* __restrict__ dy, float* __restrict__ dx,
                                       long long outputs, long long group, StridedDims kept,
                                       StridedDims reduced, Op op) {
  const int lane = threadIdx.x % kWarp;
  for (long long o : warp_stride(outputs)) {
    const long long base = strided_offset(kept, o);
    const float result = y[o];
    const double gradient = dy[o];
    if (op == Op::max || op == Op::min) {
      // The first element equal to the result, as the reference picks: each lane finds its first
      // (its elements come in order), then the warp takes the smallest.
      long long first = group;
      for (long long j = lane; j < group; j += kWarp) {
        if (x[base + strided_offset(reduced, j)] == result) {
          first = j;
          break;
        }
      }
      for (int offset = kWarp / 2; offset > 0; offset /= 2)
        first = min(first, __shfl_xor_sync(0xffffffffu, first, offset));
      if (lane == 0 && first < group)
        dx[base + strided_offset(reduced, first)] += static_cast<float>(gradient);
      continue;
    }
    long long zeros = 0;
    double nonzero_product = 1;
    if (op == Op::prod) {
      for (long long j = lane; j < group; j += kWarp) {
        const double v = x[base + strided_offset(reduced, j)];
        if (v == 0) {
          ++zeros;
        } else {
          nonzero_product *= v;
        }
      }
      for (int offset = kWarp / 2; offset > 0; offset /= 2) {
        zeros += __shfl_xor_sync(0xffffffffu, zeros, offset);
        nonzero_product *= __shfl_xor_sync(0xffffffffu, nonzero_product, offset);
      }
    }
    for (long long j = lane; j < group; j += kWarp) {
      const long long at = base + strided_offset(reduced, j);
      dx[at] += static_cast<float>(gradient * partial(op, x[at], result, group, zeros, nonzero_product));
    }
  }
}

class ReduceKernel final : public CudaKernel {
 public:
  ReduceKernel(StridedDims kept, StridedDims reduced, long long group, Op op, StreamContext& context)
      : CudaKernel(context), kept_(kept), reduced_(reduced), group_(group), op_(op) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    double init = 0;
    if (op_ == Op::max) init = -INFINITY;
    if (op_ == Op::min) init = INFINITY;
    if (op_ == Op::prod) init = 1;
    launch(context_, n * kWarp, reduce_groups, inputs[0].data<float>(), outputs[0].data<float>(), n, group_,
           kept_, reduced_, op_, init);
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0 || !input_grads[0].defined()) return;
    launch(context_, n * kWarp, reduce_groups_backward, inputs[0].data<float>(), outputs[0].data<float>(),
           output_grads[0].data<float>(), input_grads[0].data<float>(), n, group_, kept_, reduced_, op_);
  }

 private:
  StridedDims kept_, reduced_;
  long long group_;
  Op op_;
};

}  // namespace

std::unique_ptr<Kernel> make_reduce(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context) {
  const auto& reduce = static_cast<const ReduceLayer&>(layer);
  const Shape& in = inputs[0];
  if (!fits_rank(static_cast<std::size_t>(in.rank()))) return nullptr;
  const std::vector<bool> reduced = reduce.reduced_axes(in);
  const std::vector<std::int64_t> strides = contiguous_strides(in.dims());
  std::vector<std::int64_t> kept_sizes, kept_strides, reduced_sizes, reduced_strides;
  long long group = 1;
  for (int k = 0; k < in.rank(); ++k) {
    const auto uk = static_cast<std::size_t>(k);
    if (reduced[uk]) {
      reduced_sizes.push_back(in[k]);
      reduced_strides.push_back(strides[uk]);
      group *= in[k];
    } else {
      kept_sizes.push_back(in[k]);
      kept_strides.push_back(strides[uk]);
    }
  }
  return std::make_unique<ReduceKernel>(strided_dims(kept_sizes, kept_strides),
                                        strided_dims(reduced_sizes, reduced_strides), group, reduce.op(),
                                        context);
}

}  // namespace espresso::cuda
