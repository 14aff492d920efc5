// LRN on the GPU: a thread per output sums the squares of its window, in the reference's order.
// Backward gathers: a thread per input gradient walks the windows that hold its element and
// recomputes their scales, so it needs no scratch memory.
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/lrn.h"

namespace espresso::cuda {
namespace {

struct Normalisation {
  long long total;
  int channels, size, before;
  long long spatial;  // across: positions per channel
  int height, width;  // within
  float scale, k, beta;
};

// k + scale · Σx² over the channels [c − before, c − before + size) at one position of one image.
__device__ float across_scale(const Normalisation& p, const float* __restrict__ x, long long image, int c,
                              long long position) {
  const int first = max(c - p.before, 0);
  const int last = min(c - p.before + p.size, p.channels);
  float sum = 0.0f;
  for (int j = first; j < last; ++j) {
    const float v = x[(image * p.channels + j) * p.spatial + position];
    sum += v * v;
  }
  return p.k + p.scale * sum;
}

// 1 + scale · Σx² over the zero-padded size x size window around (h, w) of one plane.
__device__ float within_scale(const Normalisation& p, const float* __restrict__ plane, int h, int w) {
  float sum = 0.0f;
  for (int r = max(h - p.before, 0); r < min(h - p.before + p.size, p.height); ++r) {
    for (int c = max(w - p.before, 0); c < min(w - p.before + p.size, p.width); ++c) {
      const float v = plane[static_cast<long long>(r) * p.width + c];
      sum += v * v;
    }
  }
  return 1.0f + p.scale * sum;
}

__global__ void lrn_across(Normalisation p, const float* __restrict__ x, float* __restrict__ y) {
  for (long long i : grid_stride(p.total)) {
    const long long position = i % p.spatial;
    const int c = static_cast<int>(i / p.spatial % p.channels);
    const long long image = i / p.spatial / p.channels;
    y[i] = x[i] * powf(across_scale(p, x, image, c, position), -p.beta);
  }
}

__global__ void lrn_within(Normalisation p, const float* __restrict__ x, float* __restrict__ y) {
  for (long long i : grid_stride(p.total)) {
    const int w = static_cast<int>(i % p.width);
    const int h = static_cast<int>(i / p.width % p.height);
    const float* plane = x + (i / (static_cast<long long>(p.width) * p.height)) * p.width * p.height;
    y[i] = x[i] * powf(within_scale(p, plane, h, w), -p.beta);
  }
}

// dx = dy · scale^-beta − 2 · beta · scale_factor · x · Σ dy·y/scale over the channels whose windows
// hold this one: [c + before − size + 1, c + before].
__global__ void lrn_across_backward(Normalisation p, const float* __restrict__ x, const float* __restrict__ y,
                                    const float* __restrict__ dy, float* __restrict__ dx) {
  for (long long i : grid_stride(p.total)) {
    const long long position = i % p.spatial;
    const int c = static_cast<int>(i / p.spatial % p.channels);
    const long long image = i / p.spatial / p.channels;
    const int first = max(c + p.before - p.size + 1, 0);
    const int last = min(c + p.before + 1, p.channels);
    float gathered = 0.0f;
    for (int j = first; j < last; ++j) {
      const long long at = (image * p.channels + j) * p.spatial + position;
      gathered += dy[at] * y[at] / across_scale(p, x, image, j, position);
    }
    dx[i] += dy[i] * powf(across_scale(p, x, image, c, position), -p.beta) -
             2.0f * p.beta * p.scale * x[i] * gathered;
  }
}

// As lrn_across_backward over the size x size positions whose windows hold (h, w).
__global__ void lrn_within_backward(Normalisation p, const float* __restrict__ x, const float* __restrict__ y,
                                    const float* __restrict__ dy, float* __restrict__ dx) {
  const long long plane_size = static_cast<long long>(p.width) * p.height;
  for (long long i : grid_stride(p.total)) {
    const int w = static_cast<int>(i % p.width);
    const int h = static_cast<int>(i / p.width % p.height);
    const long long plane_start = i / plane_size * plane_size;
    const float* plane = x + plane_start;
    float gathered = 0.0f;
    for (int r = max(h + p.before - p.size + 1, 0); r < min(h + p.before + 1, p.height); ++r) {
      for (int c = max(w + p.before - p.size + 1, 0); c < min(w + p.before + 1, p.width); ++c) {
        const long long at = plane_start + static_cast<long long>(r) * p.width + c;
        gathered += dy[at] * y[at] / within_scale(p, plane, r, c);
      }
    }
    dx[i] += dy[i] * powf(within_scale(p, plane, h, w), -p.beta) - 2.0f * p.beta * p.scale * x[i] * gathered;
  }
}

class LRNKernel final : public CudaKernel {
 public:
  LRNKernel(const Normalisation& params, bool across, StreamContext& context)
      : CudaKernel(context), params_(params), across_(across) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (params_.total == 0) return;
    launch(context_, params_.total, across_ ? lrn_across : lrn_within, params_, inputs[0].data<float>(),
           outputs[0].data<float>());
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    if (params_.total == 0 || !input_grads[0].defined()) return;
    launch(context_, params_.total, across_ ? lrn_across_backward : lrn_within_backward, params_,
           inputs[0].data<float>(), outputs[0].data<float>(), output_grads[0].data<float>(),
           input_grads[0].data<float>());
  }

  const char* name() const override { return across_ ? "cuda-across" : "cuda-within"; }

 private:
  Normalisation params_;
  bool across_;
};

}  // namespace

std::unique_ptr<Kernel> make_lrn(const Layer& layer, const std::vector<Shape>& inputs,
                                 StreamContext& context) {
  const auto& lrn = static_cast<const LRNLayer&>(layer);
  const Shape& shape = inputs[0];
  Normalisation p{};
  p.total = shape.numel();
  p.channels = static_cast<int>(shape[1]);
  p.size = static_cast<int>(lrn.size());
  p.before = static_cast<int>(lrn.before());
  p.beta = lrn.beta();
  if (lrn.across_channels()) {
    p.spatial = shape.count(2);
    p.scale = lrn.alpha() / static_cast<float>(lrn.size());
    p.k = lrn.k();
  } else {
    p.height = static_cast<int>(shape[2]);
    p.width = static_cast<int>(shape[3]);
    p.scale = lrn.alpha() / static_cast<float>(lrn.size() * lrn.size());
  }
  return std::make_unique<LRNKernel>(p, lrn.across_channels(), context);
}

}  // namespace espresso::cuda
