// Embed on the GPU (training the sequence models of docs/sequence.md on a GPU): a thread per output
// element copies its row element W[index][k] (+ b[k]); backward adds each output's gradient into the row
// it came from and sums the bias gradient per output column.
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/embed.h"

namespace espresso::cuda {
namespace {

// A value that is no row of the table comes back as -1. The GPU cannot raise the reference's
// ShapeError without a synchronisation in every forward, so forward yields NaN there and backward
// skips it (as Gather does).
__device__ long long row_of(float stored, long long rows) {
  return stored >= 0.0f && stored < static_cast<float>(rows) && stored == floorf(stored)
             ? static_cast<long long>(stored)
             : -1;
}

__global__ void embed_forward(const float* __restrict__ indices, const float* __restrict__ w,
                              const float* __restrict__ b, float* __restrict__ y, long long n, long long width,
                              long long rows) {
  for (long long i : grid_stride(n)) {
    const long long k = i % width, row = row_of(indices[i / width], rows);
    y[i] = row >= 0 ? w[row * width + k] + (b != nullptr ? b[k] : 0.0f) : NAN;
  }
}

// Repeated indices send several outputs into one row, hence the atomics.
__global__ void embed_weight_grad(const float* __restrict__ indices, const float* __restrict__ dy,
                                  float* __restrict__ dw, long long n, long long width, long long rows) {
  for (long long i : grid_stride(n)) {
    const long long row = row_of(indices[i / width], rows);
    if (row >= 0) atomicAdd(dw + row * width + i % width, dy[i]);
  }
}

// One thread per column; neighbouring threads read neighbouring columns of each position's row.
__global__ void embed_bias_grad(const float* __restrict__ dy, float* __restrict__ db, long long positions,
                                long long width) {
  for (long long k : grid_stride(width)) {
    float sum = 0.0f;
    for (long long p = 0; p < positions; ++p) sum += dy[p * width + k];
    db[k] += sum;
  }
}

class EmbedKernel final : public CudaKernel {
 public:
  EmbedKernel(const float* w, const float* b, std::int64_t width, std::int64_t rows, StreamContext& context)
      : CudaKernel(context), w_(w), b_(b), width_(width), rows_(rows) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    launch(context_, n, embed_forward, inputs[0].data<float>(), w_, b_, outputs[0].data<float>(), n, width_, rows_);
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>&,
                std::vector<Tensor>& weight_grads) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    if (weight_grads[0].defined()) {
      launch(context_, n, embed_weight_grad, inputs[0].data<float>(), output_grads[0].data<float>(),
             weight_grads[0].data<float>(), n, width_, rows_);
    }
    if (b_ != nullptr && weight_grads.size() > 1 && weight_grads[1].defined()) {
      launch(context_, width_, embed_bias_grad, output_grads[0].data<float>(), weight_grads[1].data<float>(),
             n / width_, width_);
    }
  }

 private:
  const float* w_;
  const float* b_;
  std::int64_t width_, rows_;
};

}  // namespace

std::unique_ptr<Kernel> make_embed(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  layer.output_shapes(inputs);
  const auto& embed = static_cast<const EmbedLayer&>(layer);
  const std::string owner = "layer '" + layer.name() + "'";
  const float* w = context.device_weights(layer.weights()[0], owner).data<float>();
  const float* b = embed.bias_term() ? context.device_weights(layer.weights()[1], owner).data<float>() : nullptr;
  return std::make_unique<EmbedKernel>(w, b, embed.num_output(), embed.input_dim(), context);
}

}  // namespace espresso::cuda
