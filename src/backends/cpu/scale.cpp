// Scale as a per-channel multiply-add over the covered axes.
#include "layers/scale.h"

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"

namespace espresso::cpu {
namespace {

class ScaleKernel final : public Kernel {
 public:
  ScaleKernel(const ScaleLayer& layer, const std::vector<Shape>& inputs)
      : layer_(layer), split_(layer.split(inputs)) {
    if (!layer.has_bias()) zeros_.assign(static_cast<std::size_t>(split_.channels), 0.0f);
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* bias = layer_.has_bias() ? layer_.bias_data() : zeros_.data();
    channel_affine(inputs[0].data<float>(), outputs[0].data<float>(), split_, layer_.scale_data(inputs),
                   bias);
  }
  const char* name() const override { return channel_affine_name(); }

 private:
  const ScaleLayer& layer_;
  AxisSplit split_;
  std::vector<float> zeros_;
};

}  // namespace

std::unique_ptr<Kernel> make_scale(const Layer& layer, const std::vector<Shape>& inputs) {
  return std::make_unique<ScaleKernel>(static_cast<const ScaleLayer&>(layer), inputs);
}

}  // namespace espresso::cpu
