// Bias as a per-channel add over the covered axes.
#include "layers/bias.h"

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"

namespace espresso::cpu {
namespace {

class BiasKernel final : public Kernel {
 public:
  BiasKernel(const BiasLayer& layer, const std::vector<Shape>& inputs)
      : layer_(layer), split_(layer.split(inputs)), ones_(static_cast<std::size_t>(split_.channels), 1.0f) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    channel_affine(inputs[0].data<float>(), outputs[0].data<float>(), split_, ones_.data(),
                   layer_.bias_data(inputs));
  }
  const char* name() const override { return channel_affine_name(); }

 private:
  const BiasLayer& layer_;
  AxisSplit split_;
  std::vector<float> ones_;
};

}  // namespace

std::unique_ptr<Kernel> make_bias(const Layer& layer, const std::vector<Shape>& inputs) {
  return std::make_unique<BiasKernel>(static_cast<const BiasLayer&>(layer), inputs);
}

}  // namespace espresso::cpu
