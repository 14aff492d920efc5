// Deconvolution on the CPU: per group one sgemm (Wᵀ · x) into columns, then col2im scatters them
// into the output; 1x1 windows write the GEMM straight to the output.
#include "layers/deconvolution.h"

#include <algorithm>

#include "backends/cpu/blas.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/im2col.h"

namespace espresso::cpu {
namespace {

class DeconvolutionKernel final : public Kernel {
 public:
  DeconvolutionKernel(const DeconvolutionLayer& layer, const ConvGeometry& g)
      : layer_(layer), g_(g), schedule_(g.batch) {
    // The output is the image that the deconvolution's columns fold back into.
    layout_ = {g.out_channels, g.out_size, g.in_size, g.kernel, g.stride, g.pad, g.dilation};
    bool unit = true;
    for (int a = 0; a < g.axes(); ++a) {
      const auto i = static_cast<std::size_t>(a);
      unit = unit && g.kernel[i] == 1 && g.stride[i] == 1 && g.pad[i] == 0 && g.out_size[i] == g.in_size[i];
    }
    pointwise_ = unit;
    if (!pointwise_) {
      columns_.assign(
          static_cast<std::size_t>(schedule_.slots()),
          std::vector<float>(static_cast<std::size_t>(g.out_channels * g.kernel_spatial() * g.in_spatial())));
    }
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const float* w = layer_.weights()[0].data<float>();
    const float* bias = layer_.has_bias() ? layer_.weights()[1].data<float>() : nullptr;
    const std::int64_t in_spatial = g_.in_spatial();
    const std::int64_t out_spatial = g_.out_spatial();
    const std::int64_t in_group = g_.in_channels / g_.group;
    const std::int64_t rows = g_.out_channels / g_.group * g_.kernel_spatial();  // column rows per group

    schedule_.run([&](std::int64_t n, int slot) {
      const float* image = x + n * g_.in_channels * in_spatial;
      float* out = y + n * g_.out_channels * out_spatial;
      float* columns = pointwise_ ? out : columns_[static_cast<std::size_t>(slot)].data();
      for (std::int64_t grp = 0; grp < g_.group; ++grp) {
        sgemm(true, false, rows, in_spatial, in_group, 1.0f, w + grp * in_group * rows, rows,
              image + grp * in_group * in_spatial, in_spatial, 0.0f, columns + grp * rows * in_spatial,
              in_spatial);
      }
      if (!pointwise_) {
        std::fill(out, out + g_.out_channels * out_spatial, 0.0f);
        col2im(columns, layout_, out);
      }
      if (bias) {
        for (std::int64_t c = 0; c < g_.out_channels; ++c) {
          float* plane = out + c * out_spatial;
          for (std::int64_t i = 0; i < out_spatial; ++i) plane[i] += bias[c];
        }
      }
    });
  }

  const char* name() const override { return pointwise_ ? "sgemm" : "sgemm+col2im"; }

 private:
  const DeconvolutionLayer& layer_;
  ConvGeometry g_;
  ImageSchedule schedule_;
  WindowLayout layout_;
  bool pointwise_ = false;
  std::vector<std::vector<float>> columns_;  // one column buffer per schedule slot
};

}  // namespace

std::unique_ptr<Kernel> make_deconvolution(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& deconv = static_cast<const DeconvolutionLayer&>(layer);
  return std::make_unique<DeconvolutionKernel>(deconv, deconv.geometry(inputs[0]));
}

}  // namespace espresso::cpu
