// Binary on the GPU: one kernel for every operation, reading both operands through broadcast
// strides (0 along the axes an operand stretches over), or element by element when both have the
// output's shape (a residual Add: no index arithmetic). Backward: an operand of the output's size
// takes its gradient element-wise; a broadcast one gathers, per element, the sum over the outputs
// it reached. A sum's or difference's first operand may take its gradient in place over the output's,
// which it equals. fp16 / bf16 instantiate the same kernels for their storage type, in float inside.
#include <algorithm>
#include <type_traits>

#include "backends/cuda/channel_packs.cuh"
#include "backends/cuda/index_map.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"
#include "layers/binary.h"

namespace espresso::cuda {
namespace {

// Outputs one warp sums for a broadcast operand's element; longer sums are split, and the warps'
// partial sums added atomically.
constexpr long long kChunk = 4096;

// T: the storage type (precision.cuh); the operation computes in float.
template <class T>
__global__ void broadcast_binary(const T* a, const T* b, T* y, long long n, StridedDims sa, StridedDims sb,
                                 BinaryLayer::Op op) {
  for (long long i : grid_stride(n)) {
    y[i] = from_float<T>(
        binary_value(op, to_float(a[strided_offset(sa, i)]), to_float(b[strided_offset(sb, i)])));
  }
}

template <class T, int kVec>  // with_pack_width
__global__ void same_shape_binary(const T* a, const T* b, T* y, std::int64_t n, BinaryLayer::Op op) {
  for_each_flat_pack<kVec>(n, [&](std::int64_t i, int count) {
    const Pack<T, kVec> as = load_pack<kVec>(a + i, count), bs = load_pack<kVec>(b + i, count);
    Pack<T, kVec> ys;
    for (int j = 0; j < kVec; ++j)
      ys.v[j] = from_float<T>(binary_value(op, to_float(as.v[j]), to_float(bs.v[j])));
    store_pack<kVec>(y + i, ys, count);
  });
}

// Both operands of the output's shape: their gradients (either may be null). `a` and `b` are null
// where the partials do not depend on them (sums, differences); `da` equal to `dy` holds its
// gradient already (in place, Kernel::backward_in_place).
template <class T, int kVec>  // with_pack_width
__global__ void same_shape_gradients(const T* a, const T* b, const T* dy, T* da, T* db, std::int64_t n,
                                     BinaryLayer::Op op) {
  for_each_flat_pack<kVec>(n, [&](std::int64_t i, int count) {
    Pack<T, kVec> as{}, bs{};
    if (a != nullptr) as = load_pack<kVec>(a + i, count);
    if (b != nullptr) bs = load_pack<kVec>(b + i, count);
    const Pack<T, kVec> gs = load_pack<kVec>(dy + i, count);
    float to_a[kVec], to_b[kVec];
    for (int j = 0; j < kVec; ++j) {
      const BinaryPartials p = binary_partials(op, to_float(as.v[j]), to_float(bs.v[j]));
      to_a[j] = to_float(gs.v[j]) * p.a;
      to_b[j] = to_float(gs.v[j]) * p.b;
    }
    // da before db, read back after it was written: one tensor as both operands makes them one buffer.
    const auto add = [&](T* grad, const float* terms) {
      Pack<T, kVec> sums = load_pack<kVec>(grad + i, count);
      for (int j = 0; j < kVec; ++j) sums.v[j] = from_float<T>(to_float(sums.v[j]) + terms[j]);
      store_pack<kVec>(grad + i, sums, count);
    };
    if (da != nullptr && da != dy) add(da, to_a);
    if (db != nullptr) add(db, to_b);
  });
}

// An operand's value at output i; 0 for a null operand (one the partials do not depend on).
template <class T>
__device__ float operand_at(const T* x, const StridedDims& s, long long i) {
  return x != nullptr ? to_float(x[strided_offset(s, i)]) : 0.0f;
}

// The gradients of the operands that have the output's size (the others null): one thread per output;
// a and b null as for same_shape_gradients. No __restrict__ on da and db: with one tensor as both operands
// they may be one buffer, and da may be dy (in place).
template <class T>
__global__ void elementwise_gradients(const T* __restrict__ a, const T* __restrict__ b, const T* dy, T* da,
                                      T* db, long long n, StridedDims sa, StridedDims sb,
                                      BinaryLayer::Op op) {
  for (long long i : grid_stride(n)) {
    const BinaryPartials p = binary_partials(op, operand_at(a, sa, i), operand_at(b, sb, i));
    const float g = to_float(dy[i]);
    if (da != nullptr && da != dy) da[i] = from_float<T>(to_float(da[i]) + g * p.a);  // da == dy: in place
    if (db != nullptr) db[i] = from_float<T>(to_float(db[i]) + g * p.b);
  }
}

// Where a broadcast operand's element e went: the outputs own(e) + spread(r) for r below
// spread_count, `own` walking the operand's axes and `spread` those it stretches over, both at the
// output's strides.
struct Reach {
  StridedDims own, spread;
  long long spread_count = 1;
};

// The gradient of one broadcast operand (`operand` 0 for a, 1 for b; a and b null as for
// same_shape_gradients): a warp per element and chunk of kChunk outputs, adding directly into `grad` when one
// chunk covers the element, else atomically into the fp32 `partial` (grad itself when T is float). No
// __restrict__ on grad and partial: they may be one buffer.
template <class T>
__global__ void broadcast_gradient(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ dy,
                                   T* grad, float* partial, long long elements, Reach reach, long long chunks,
                                   StridedDims sa, StridedDims sb, BinaryLayer::Op op, int operand) {
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  // Uniform across each warp, so that every lane takes part in the shuffles.
  for (long long task : warp_stride(elements * chunks)) {
    const long long e = task / chunks, first = task % chunks * kChunk;
    const long long last = first + kChunk < reach.spread_count ? first + kChunk : reach.spread_count;
    const long long base = strided_offset(reach.own, e);
    float sum = 0.0f;
    for (long long r = first + lane; r < last; r += kWarp) {
      const long long i = base + strided_offset(reach.spread, r);
      const BinaryPartials p = binary_partials(op, operand_at(a, sa, i), operand_at(b, sb, i));
      sum += to_float(dy[i]) * (operand == 0 ? p.a : p.b);
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      if (chunks == 1) {
        grad[e] = from_float<T>(to_float(grad[e]) + sum);
      } else {
        atomicAdd(partial + e, sum);
      }
    }
  }
}

// grad += partial: a low-precision broadcast gradient's chunk sums, added in once complete.
template <class T>
__global__ void add_partials(const float* __restrict__ partial, T* __restrict__ grad, long long elements) {
  for (long long e : grid_stride(elements)) grad[e] = from_float<T>(to_float(grad[e]) + partial[e]);
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

Reach reach_of(const Shape& operand, const Shape& out) {
  const std::vector<std::int64_t> out_strides = contiguous_strides(out.dims());
  std::vector<std::int64_t> own_sizes, own_strides, spread_sizes, spread_strides;
  for (int o = 0, skipped = out.rank() - operand.rank(); o < out.rank(); ++o) {
    const std::int64_t size = o >= skipped ? operand[o - skipped] : 1;
    const auto stride = out_strides[static_cast<std::size_t>(o)];
    if (size == out[o]) {
      own_sizes.push_back(size);
      own_strides.push_back(stride);
    } else {
      spread_sizes.push_back(out[o]);
      spread_strides.push_back(stride);
    }
  }
  Reach reach;
  reach.own = strided_dims(own_sizes, own_strides);
  reach.spread = strided_dims(spread_sizes, spread_strides);
  for (std::int64_t size : spread_sizes) reach.spread_count *= size;
  return reach;
}

// y = a op b over `n` outputs, both operands of the output's shape when `same_shape`.
template <class T>
void binary_forward(StreamContext& context, const T* a, const T* b, T* y, std::int64_t n, bool same_shape,
                    const StridedDims& sa, const StridedDims& sb, BinaryLayer::Op op) {
  if (n == 0) return;
  if (!same_shape) {
    launch(context, n, broadcast_binary<T>, a, b, y, n, sa, sb, op);
    return;
  }
  with_pack_width<T>({a, b, y}, [&](auto width) {
    constexpr int kVec = decltype(width)::value;
    launch(context, (n + kVec - 1) / kVec, same_shape_binary<T, kVec>, a, b, y, n, op);
  });
}

// The partials of sums and differences are constants: their backward reads neither operand.
bool constant_partials(BinaryLayer::Op op) {
  return op == BinaryLayer::Op::add || op == BinaryLayer::Op::sub;
}

// T: the storage type (float, or __half / __nv_bfloat16 for make_lowp_binary).
template <class T>
class BinaryKernel final : public CudaKernel {
 public:
  BinaryKernel(StridedDims a, StridedDims b, Reach reach_a, Reach reach_b, BinaryLayer::Op op,
               StreamContext& context)
      : CudaKernel(context), a_(a), b_(b), reach_{reach_a, reach_b}, op_(op) {
    if constexpr (!std::is_same_v<T, float>) {
      std::size_t bytes = 0;
      for (const Reach& reach : reach_) {
        if (chunks(reach) > 1)
          bytes = std::max(bytes, static_cast<std::size_t>(elements(reach)) * sizeof(float));
      }
      context.reserve_workspace(bytes);
    }
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    // No __restrict__: the executor may run the layer in place on input 0.
    binary_forward(context_, static_cast<const T*>(inputs[0].raw()), static_cast<const T*>(inputs[1].raw()),
                   static_cast<T*>(outputs[0].raw()), outputs[0].numel(), same_shape(), a_, b_, op_);
  }

  bool backward_reads_inputs() const override { return !constant_partials(op_); }
  // A sum's or difference's first operand of the output's shape: its gradient is the output's.
  bool backward_in_place(const Layer&) const override {
    return constant_partials(op_) && reach_[0].spread_count == 1;
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    // A sum's or difference's operands may be gone by now (backward_reads_inputs).
    const bool constant = constant_partials(op_);
    const auto* a = constant ? nullptr : static_cast<const T*>(inputs[0].raw());
    const auto* b = constant ? nullptr : static_cast<const T*>(inputs[1].raw());
    const auto* dy = static_cast<const T*>(output_grads[0].raw());
    T* full[2] = {nullptr, nullptr};  // gradients taken element-wise
    for (int k = 0; k < 2; ++k) {
      Tensor& grad = input_grads[static_cast<std::size_t>(k)];
      if (!grad.defined()) continue;
      auto* g = static_cast<T*>(grad.raw());
      if (reach_[k].spread_count == 1) {
        full[k] = g;
        continue;
      }
      const std::int64_t elements = grad.numel();
      const long long chunk_count = chunks(reach_[k]);
      // Chunks' sums meet in fp32: in the gradient itself for float, else in the workspace reserved
      // when the kernel was made, since rounding each partial sum to T would lose small chunks.
      float* partial = nullptr;
      if constexpr (std::is_same_v<T, float>) {
        partial = g;
      } else if (chunk_count > 1) {
        partial = static_cast<float*>(context_.workspace());
        ESPRESSO_CUDA_CHECK(cudaMemsetAsync(partial, 0, static_cast<std::size_t>(elements) * sizeof(float),
                                            context_.stream()));
      }
      launch(context_, elements * chunk_count * kWarp, broadcast_gradient<T>, a, b, dy, g, partial, elements,
             reach_[k], chunk_count, a_, b_, op_, k);
      if constexpr (!std::is_same_v<T, float>) {
        if (chunk_count > 1) launch(context_, elements, add_partials<T>, partial, g, elements);
      }
    }
    if (full[0] == nullptr && full[1] == nullptr) return;
    if (!same_shape()) {
      launch(context_, n, elementwise_gradients<T>, a, b, dy, full[0], full[1], n, a_, b_, op_);
      return;
    }
    with_pack_width<T>({a, b, dy, full[0], full[1]}, [&](auto width) {
      constexpr int kVec = decltype(width)::value;
      launch(context_, (n + kVec - 1) / kVec, same_shape_gradients<T, kVec>, a, b, dy, full[0], full[1], n,
             op_);
    });
  }

 private:
  bool same_shape() const { return reach_[0].spread_count == 1 && reach_[1].spread_count == 1; }
  // The elements of a broadcast operand, and the chunks its gradient's sums are split into.
  static long long elements(const Reach& reach) {
    long long count = 1;
    for (int k = 0; k < reach.own.rank; ++k) count *= reach.own.size[k];
    return count;
  }
  static long long chunks(const Reach& reach) { return (reach.spread_count + kChunk - 1) / kChunk; }

  StridedDims a_, b_;
  Reach reach_[2];
  BinaryLayer::Op op_;
};

template <class T>
std::unique_ptr<Kernel> binary_kernel(const Layer& layer, const std::vector<Shape>& inputs,
                                      StreamContext& context) {
  const Shape out = layer.output_shapes(inputs)[0];
  if (!fits_rank(static_cast<std::size_t>(out.rank()))) return nullptr;
  return std::make_unique<BinaryKernel<T>>(strided_dims(out.dims(), broadcast_strides(inputs[0], out)),
                                           strided_dims(out.dims(), broadcast_strides(inputs[1], out)),
                                           reach_of(inputs[0], out), reach_of(inputs[1], out),
                                           static_cast<const BinaryLayer&>(layer).op(), context);
}

}  // namespace

std::unique_ptr<Kernel> make_lowp_binary(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                         StreamContext& context) {
  const BinaryLayer::Op op = static_cast<const BinaryLayer&>(layer).op();
  // Sums, differences, products, maxima and minima keep their operands' range; the others stay fp32.
  if (op != BinaryLayer::Op::add && op != BinaryLayer::Op::sub && op != BinaryLayer::Op::mul &&
      op != BinaryLayer::Op::max && op != BinaryLayer::Op::min) {
    return nullptr;
  }
  std::unique_ptr<Kernel> kernel;
  with_storage_type(dtype, "Binary",
                    [&](auto type) { kernel = binary_kernel<decltype(type)>(layer, inputs, context); });
  return kernel;
}

// Channels-last: 4-D operands broadcast as they do in memory order.
std::unique_ptr<Kernel> make_nhwc_binary(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                         StreamContext& context) {
  std::vector<Shape> stored;
  for (const Shape& input : inputs) {
    if (input.rank() != 4) return nullptr;
    stored.push_back(channels_last_order(input));
  }
  return make_lowp_binary(layer, stored, dtype, context);
}

std::unique_ptr<Kernel> make_binary(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context) {
  return binary_kernel<float>(layer, inputs, context);
}

}  // namespace espresso::cuda
