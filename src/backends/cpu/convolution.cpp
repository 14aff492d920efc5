// Convolution on the CPU: im2col + one sgemm per group, or a plain GEMM for 1x1 windows.
#include "layers/convolution.h"

#include "backends/cpu/blas.h"
#include "backends/cpu/cpu_backend.h"
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

  const char* name() const override { return pointwise_ ? "sgemm" : "im2col+sgemm"; }

 private:
  const ConvolutionLayer& layer_;
  ConvGeometry g_;
  ImageSchedule schedule_;
  WindowLayout layout_;
  bool pointwise_ = false;
  std::vector<std::vector<float>> columns_;  // one unfolding buffer per schedule slot
};

}  // namespace

std::unique_ptr<Kernel> make_convolution(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& conv = static_cast<const ConvolutionLayer&>(layer);
  return std::make_unique<ConvolutionKernel>(conv, conv.geometry(inputs[0]));
}

}  // namespace espresso::cpu
