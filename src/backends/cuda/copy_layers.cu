// The layers that only move data on the GPU: Concat and Slice (strided block copies along an axis),
// Split (a copy per output), and Flatten, Reshape and Dropout at inference (a copy, skipped when the
// executor runs them in place). Forward is cudaMemcpy2DAsync/cudaMemcpyAsync calls on the Net's
// stream; backward adds the same blocks the other way, output gradients into input gradients.
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"
#include "layers/axis.h"

namespace espresso::cuda {
namespace {

template <class T>
__global__ void add_rows_kernel(T* destination, long long destination_pitch, const T* source,
                                long long source_pitch, long long width, long long count) {
  for (long long i : grid_stride(count)) {
    const long long row = i / width, column = i - row * width;
    T& to = destination[row * destination_pitch + column];
    to = from_float<T>(to_float(to) + to_float(source[row * source_pitch + column]));
  }
}

// destination[r · destination_pitch + i] += source[r · source_pitch + i] for r < rows, i < width, in
// elements of `dtype` (f32, or f16 / bf16 in mixed precision training) from the elements `destination_at`
// and `source_at` on: backward's counterpart of copy_rows.
void add_rows(StreamContext& context, DType dtype, Tensor& destination, std::int64_t destination_at,
              std::int64_t destination_pitch, const Tensor& source, std::int64_t source_at,
              std::int64_t source_pitch, std::int64_t width, std::int64_t rows) {
  const std::int64_t count = width * rows;
  if (count == 0) return;
  with_storage_type(dtype, "copy backward", [&](auto type) {
    using T = decltype(type);
    launch(context, count, add_rows_kernel<T>, static_cast<T*>(destination.raw()) + destination_at,
           destination_pitch, static_cast<const T*>(source.raw()) + source_at, source_pitch, width, count);
  });
}

// Rows of `width` bytes from a source with `source_pitch` into a destination with `destination_pitch`.
void copy_rows(StreamContext& context, void* destination, std::size_t destination_pitch, const void* source,
               std::size_t source_pitch, std::size_t width, std::size_t rows) {
  if (width == 0 || rows == 0) return;
  ESPRESSO_CUDA_CHECK(cudaMemcpy2DAsync(destination, destination_pitch, source, source_pitch, width, rows,
                                        cudaMemcpyDeviceToDevice, context.stream()));
}

// Concat's rows in 16-byte packs, a thread per pack of the output: for channels-last Concats, whose rows
// (a pixel's channels of each part) are a few hundred bytes, where cudaMemcpy2DAsync per part moved about
// half the bandwidth.
constexpr int kMaxJoinedParts = 8;
constexpr long long kMaxJoinedRowBytes = 2048;  // longer rows (N, C, H, W images) copy well as they are
struct JoinedRows {
  const uint4* part[kMaxJoinedParts];
  long long width[kMaxJoinedParts];  // packs per row of each part
  int parts;
  long long whole;  // packs per output row
};

__global__ void join_rows(JoinedRows j, uint4* __restrict__ out, long long packs) {
  for (long long i : grid_stride(packs)) {
    const long long row = i / j.whole;
    long long column = i - row * j.whole;
    int k = 0;
    while (column >= j.width[k]) column -= j.width[k++];
    out[i] = j.part[k][row * j.width[k] + column];
  }
}

// Concat (joining the inputs) or Slice (cutting the input): outer rows, each made of one block
// per part of `part_block[k]` elements (the part's extent along the axis times the inner size) of
// `dtype`.
class AxisCopyKernel final : public CudaKernel {
 public:
  AxisCopyKernel(bool joining, std::int64_t outer, std::vector<std::int64_t> part_block, DType dtype,
                 StreamContext& context)
      : CudaKernel(context),
        joining_(joining),
        outer_(outer),
        part_block_(std::move(part_block)),
        dtype_(dtype),
        element_(dtype_size(dtype)) {
    for (std::int64_t b : part_block_) whole_block_ += b;
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (joining_ && join_in_packs(inputs, outputs[0])) return;
    const std::size_t whole = static_cast<std::size_t>(whole_block_) * element_;
    std::size_t offset = 0;
    for (std::size_t k = 0; k < part_block_.size(); ++k) {
      const std::size_t part = static_cast<std::size_t>(part_block_[k]) * element_;
      if (joining_) {
        copy_rows(context_, static_cast<std::byte*>(outputs[0].raw()) + offset, whole, inputs[k].raw(), part,
                  part, static_cast<std::size_t>(outer_));
      } else {
        copy_rows(context_, outputs[k].raw(), part, static_cast<const std::byte*>(inputs[0].raw()) + offset,
                  whole, part, static_cast<std::size_t>(outer_));
      }
      offset += part;
    }
  }
  void backward(const Layer&, const std::vector<Tensor>&, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    std::int64_t offset = 0;
    for (std::size_t k = 0; k < part_block_.size(); ++k) {
      const std::int64_t part = part_block_[k];
      if (joining_) {
        if (input_grads[k].defined())
          add_rows(context_, dtype_, input_grads[k], 0, part, output_grads[0], offset, whole_block_, part,
                   outer_);
      } else if (input_grads[0].defined()) {
        add_rows(context_, dtype_, input_grads[0], offset, whole_block_, output_grads[k], 0, part, part,
                 outer_);
      }
      offset += part;
    }
  }
  const char* name() const override { return "cuda-copy"; }

 private:
  // join_rows where the rows are short, every part's rows are whole packs and every address allows them;
  // false otherwise.
  bool join_in_packs(const std::vector<Tensor>& inputs, Tensor& output) {
    constexpr std::size_t kPack = sizeof(uint4);
    if (part_block_.size() > static_cast<std::size_t>(kMaxJoinedParts) ||
        reinterpret_cast<std::uintptr_t>(output.raw()) % kPack != 0) {
      return false;
    }
    JoinedRows j{};
    j.parts = static_cast<int>(part_block_.size());
    for (int k = 0; k < j.parts; ++k) {
      const std::size_t bytes = static_cast<std::size_t>(part_block_[static_cast<std::size_t>(k)]) * element_;
      if (bytes % kPack != 0 || reinterpret_cast<std::uintptr_t>(inputs[k].raw()) % kPack != 0) return false;
      j.part[k] = static_cast<const uint4*>(inputs[k].raw());
      j.width[k] = static_cast<long long>(bytes / kPack);
      j.whole += j.width[k];
    }
    if (j.whole * static_cast<long long>(kPack) > kMaxJoinedRowBytes) return false;
    const long long packs = j.whole * outer_;
    if (packs > 0) launch(context_, packs, join_rows, j, static_cast<uint4*>(output.raw()), packs);
    return true;
  }

  bool joining_;
  std::int64_t outer_;
  std::vector<std::int64_t> part_block_;
  DType dtype_;
  std::size_t element_;
  std::int64_t whole_block_ = 0;
};

// Input 0 copied whole into every output (Split, and the shape-only layers with one output); backward
// adds every output's gradient into input 0's.
class WholeCopyKernel final : public CudaKernel {
 public:
  explicit WholeCopyKernel(StreamContext& context) : CudaKernel(context) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    for (Tensor& out : outputs) {
      if (out.raw() == inputs[0].raw() || out.bytes() == 0) continue;
      ESPRESSO_CUDA_CHECK(cudaMemcpyAsync(out.raw(), inputs[0].raw(), out.bytes(), cudaMemcpyDeviceToDevice,
                                          context_.stream()));
    }
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    if (!input_grads[0].defined()) return;
    const std::int64_t n = inputs[0].numel();
    for (const Tensor& grad : output_grads)
      add_rows(context_, grad.dtype(), input_grads[0], 0, n, grad, 0, n, n, 1);
  }
  const char* name() const override { return "cuda-copy"; }
};

// The layer's axis attribute resolved against `rank`; the layer has validated it already.
int layer_axis(const Layer& layer, int rank) {
  return *resolve_axis(layer.spec().attrs.get_int("axis", 1), rank);
}

std::unique_ptr<Kernel> axis_copy_kernel(bool joining, const Shape& whole, const std::vector<Shape>& parts,
                                         int axis, StreamContext& context, DType dtype = DType::f32) {
  const std::int64_t inner = whole.count(axis + 1);
  std::vector<std::int64_t> blocks;
  for (const Shape& part : parts) blocks.push_back(part[axis] * inner);
  return std::make_unique<AxisCopyKernel>(joining, whole.count(0, axis), std::move(blocks), dtype, context);
}

}  // namespace

std::unique_ptr<Kernel> make_concat(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context) {
  const Shape joined = layer.output_shapes(inputs)[0];
  return axis_copy_kernel(true, joined, inputs, layer_axis(layer, joined.rank()), context);
}

std::unique_ptr<Kernel> make_slice(const Layer& layer, const std::vector<Shape>& inputs,
                                   StreamContext& context) {
  return axis_copy_kernel(false, inputs[0], layer.output_shapes(inputs), layer_axis(layer, inputs[0].rank()),
                        context);
}

std::unique_ptr<Kernel> copy_kernel(const Layer&, const std::vector<Shape>&, StreamContext& context) {
  return std::make_unique<WholeCopyKernel>(context);
}

// Flatten, Reshape and Split (and Dropout at inference) move no values: a plain copy.
std::unique_ptr<Kernel> make_flatten(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  return copy_kernel(layer, inputs, context);
}

std::unique_ptr<Kernel> make_reshape(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  return copy_kernel(layer, inputs, context);
}

std::unique_ptr<Kernel> make_split(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  return copy_kernel(layer, inputs, context);
}

// In fp16 / bf16 the same copies move 2-byte elements.
std::unique_ptr<Kernel> make_lowp_concat(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                         StreamContext& context) {
  const Shape joined = layer.output_shapes(inputs)[0];
  return axis_copy_kernel(true, joined, inputs, layer_axis(layer, joined.rank()), context, dtype);
}

std::unique_ptr<Kernel> make_lowp_slice(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                        StreamContext& context) {
  return axis_copy_kernel(false, inputs[0], layer.output_shapes(inputs), layer_axis(layer, inputs[0].rank()),
                          context, dtype);
}

std::unique_ptr<Kernel> make_lowp_flatten(const Layer& layer, const std::vector<Shape>& inputs, DType,
                                          StreamContext& context) {
  return copy_kernel(layer, inputs, context);
}

std::unique_ptr<Kernel> make_lowp_reshape(const Layer& layer, const std::vector<Shape>& inputs, DType,
                                          StreamContext& context) {
  return copy_kernel(layer, inputs, context);
}

std::unique_ptr<Kernel> make_lowp_split(const Layer& layer, const std::vector<Shape>& inputs, DType,
                                        StreamContext& context) {
  return copy_kernel(layer, inputs, context);
}

// Channels-last: Concat and Slice of 4-D tensors copy the same blocks along the axis's place in memory
// (channels: rows of N·H·W).
std::unique_ptr<Kernel> make_nhwc_concat(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                         StreamContext& context) {
  const Shape joined = layer.output_shapes(inputs)[0];
  if (joined.rank() != 4) return nullptr;
  std::vector<Shape> parts;
  for (const Shape& input : inputs) parts.push_back(channels_last_order(input));
  return axis_copy_kernel(true, channels_last_order(joined), parts,
                          channels_last_axis(layer_axis(layer, joined.rank())), context, dtype);
}

std::unique_ptr<Kernel> make_nhwc_slice(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                        StreamContext& context) {
  if (inputs[0].rank() != 4) return nullptr;
  std::vector<Shape> parts;
  for (const Shape& output : layer.output_shapes(inputs)) parts.push_back(channels_last_order(output));
  return axis_copy_kernel(false, channels_last_order(inputs[0]), parts,
                          channels_last_axis(layer_axis(layer, inputs[0].rank())), context, dtype);
}

}  // namespace espresso::cuda
