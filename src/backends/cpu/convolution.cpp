// Convolution on the CPU: im2col + one sgemm per group, or a plain GEMM for 1x1 windows; depthwise
// 2-D convolutions go to a direct kernel (depthwise_convolution.cpp) outside training. Backward:
// weight gradients from the same unfolding (dy · colᵀ), input gradients by Wᵀ · dy folded back with
// col2im.
#include "layers/convolution.h"

#include <algorithm>

#include "backends/cpu/blas.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/depthwise_convolution.h"
#include "backends/cpu/im2col.h"

namespace espresso::cpu {
namespace {

class ConvolutionKernel final : public Kernel {
 public:
  ConvolutionKernel(const ConvolutionLayer& layer, const ConvGeometry& g)
      : layer_(layer), g_(g), schedule_(g.batch) {
    layout_ = {g.in_channels, g.in_size, g.out_size, g.kernel, g.stride, g.pad, g.dilation};
    bool unit = true;
    for (int a = 0; a < g.axes(); ++a) {
      const auto i = static_cast<std::size_t>(a);
      unit = unit && g.kernel[i] == 1 && g.stride[i] == 1 && g.pad[i] == 0;
    }
    pointwise_ = unit;
    if (!pointwise_) {
      columns_.assign(
          static_cast<std::size_t>(schedule_.slots()),
          std::vector<float>(static_cast<std::size_t>(g.in_channels * g.kernel_spatial() * g.out_spatial())));
    }
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const float* w = layer_.weights()[0].data<float>();
    const float* bias = layer_.has_bias() ? layer_.weights()[1].data<float>() : nullptr;
    const std::int64_t in_spatial = g_.in_spatial();
    const std::int64_t out_spatial = g_.out_spatial();
    const std::int64_t out_group = g_.out_channels / g_.group;
    const std::int64_t depth = g_.in_channels / g_.group * g_.kernel_spatial();  // GEMM's K per group

    schedule_.run([&](std::int64_t n, int slot) {
      const float* image = x + n * g_.in_channels * in_spatial;
      float* out = y + n * g_.out_channels * out_spatial;
      const float* columns = image;
      if (!pointwise_) {
        im2col(image, layout_, columns_[static_cast<std::size_t>(slot)].data());
        columns = columns_[static_cast<std::size_t>(slot)].data();
      }
      for (std::int64_t grp = 0; grp < g_.group; ++grp) {
        sgemm(false, false, out_group, out_spatial, depth, 1.0f, w + grp * out_group * depth, depth,
              columns + grp * depth * out_spatial, out_spatial, 0.0f, out + grp * out_group * out_spatial,
              out_spatial);
      }
      if (bias) {
        for (std::int64_t c = 0; c < g_.out_channels; ++c) {
          float* plane = out + c * out_spatial;
          for (std::int64_t i = 0; i < out_spatial; ++i) plane[i] += bias[c];
        }
      }
    });
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    const float* x = inputs[0].data<float>();
    const float* dy = output_grads[0].data<float>();
    float* dx = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
    const float* w = layer_.weights()[0].data<float>();
    const std::int64_t in_spatial = g_.in_spatial();
    const std::int64_t out_spatial = g_.out_spatial();
    const std::int64_t out_group = g_.out_channels / g_.group;
    const std::int64_t depth = g_.in_channels / g_.group * g_.kernel_spatial();
    const std::int64_t weight_count = g_.out_channels * depth;
    const auto slots = static_cast<std::size_t>(schedule_.slots());
    // Images run concurrently, so each slot sums its weight gradients apart; the slots are added
    // into the caller's gradients at the end.
    slot_weight_grads_.assign(slots,
                              std::vector<float>(static_cast<std::size_t>(weight_count + g_.out_channels)));
    if (!pointwise_ && dx) {
      column_grads_.resize(slots);
      for (auto& buffer : column_grads_)
        buffer.resize(static_cast<std::size_t>(g_.in_channels * g_.kernel_spatial() * out_spatial));
    }

    schedule_.run([&](std::int64_t n, int slot) {
      const float* image = x + n * g_.in_channels * in_spatial;
      const float* grad = dy + n * g_.out_channels * out_spatial;
      float* dw = slot_weight_grads_[static_cast<std::size_t>(slot)].data();
      float* db = dw + weight_count;
      const float* columns = image;
      if (!pointwise_) {
        im2col(image, layout_, columns_[static_cast<std::size_t>(slot)].data());
        columns = columns_[static_cast<std::size_t>(slot)].data();
      }
      for (std::int64_t grp = 0; grp < g_.group; ++grp) {
        sgemm(false, true, out_group, depth, out_spatial, 1.0f, grad + grp * out_group * out_spatial,
              out_spatial, columns + grp * depth * out_spatial, out_spatial, 1.0f,
              dw + grp * out_group * depth, depth);
      }
      for (std::int64_t c = 0; c < g_.out_channels; ++c) {
        const float* plane = grad + c * out_spatial;
        float sum = 0.0f;
        for (std::int64_t i = 0; i < out_spatial; ++i) sum += plane[i];
        db[c] += sum;
      }
      if (!dx) return;
      float* image_grad = dx + n * g_.in_channels * in_spatial;
      // Pointwise: the columns are the image itself, so Wᵀ · dy adds straight into it.
      float* column_grad = pointwise_ ? image_grad : column_grads_[static_cast<std::size_t>(slot)].data();
      for (std::int64_t grp = 0; grp < g_.group; ++grp) {
        sgemm(true, false, depth, out_spatial, out_group, 1.0f, w + grp * out_group * depth, depth,
              grad + grp * out_group * out_spatial, out_spatial, pointwise_ ? 1.0f : 0.0f,
              column_grad + grp * depth * out_spatial, out_spatial);
      }
      if (!pointwise_) col2im(column_grad, layout_, image_grad);
    });

    float* dw = weight_grads[0].data<float>();
    float* db = layer_.has_bias() ? weight_grads[1].data<float>() : nullptr;
    for (const std::vector<float>& sums : slot_weight_grads_) {
      for (std::int64_t i = 0; i < weight_count; ++i) dw[i] += sums[static_cast<std::size_t>(i)];
      if (db) {
        for (std::int64_t c = 0; c < g_.out_channels; ++c)
          db[c] += sums[static_cast<std::size_t>(weight_count + c)];
      }
    }
  }
  bool has_fast_backward() const override { return true; }

  const char* name() const override { return pointwise_ ? "sgemm" : "im2col+sgemm"; }

 private:
  const ConvolutionLayer& layer_;
  ConvGeometry g_;
  ImageSchedule schedule_;
  WindowLayout layout_;
  bool pointwise_ = false;
  std::vector<std::vector<float>> columns_;  // one unfolding buffer per schedule slot
  // Backward scratch per slot: weight then bias gradient sums, and the unfolded input gradient.
  std::vector<std::vector<float>> slot_weight_grads_, column_grads_;
};

}  // namespace

std::unique_ptr<Kernel> make_convolution(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& conv = static_cast<const ConvolutionLayer&>(layer);
  const ConvGeometry g = conv.geometry(inputs[0]);
  // The direct depthwise kernel has no backward of its own; training keeps im2col's threaded one.
  if (!conv.training()) {
    if (std::unique_ptr<Kernel> depthwise = depthwise_convolution_kernel(conv, g)) return depthwise;
  }
  return std::make_unique<ConvolutionKernel>(conv, g);
}

}  // namespace espresso::cpu
