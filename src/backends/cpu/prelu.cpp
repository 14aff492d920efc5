// PReLU, threaded over (batch, channel) rows; the compiler vectorises each row.
#include "layers/prelu.h"

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"

namespace espresso::cpu {
namespace {

class PReLUKernel final : public Kernel {
 public:
  explicit PReLUKernel(const PReLULayer& layer) : layer_(layer) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const Shape& shape = inputs[0].shape();
    const float* x = inputs[0].data<float>();
    const float* slopes = layer_.weights()[0].data<float>();
    float* y = outputs[0].data<float>();
    const bool shared = layer_.channel_shared();
    for_each_channel_row(split_at(shape, 1, 2), [&](std::int64_t at, std::int64_t length, std::int64_t c) {
      const float slope = slopes[shared ? 0 : c];
      for (std::int64_t i = at; i < at + length; ++i) y[i] = x[i] > 0 ? x[i] : slope * x[i];
    });
  }
  const char* name() const override { return "threaded"; }

 private:
  const PReLULayer& layer_;
};

}  // namespace

std::unique_ptr<Kernel> make_prelu(const Layer& layer, const std::vector<Shape>&) {
  return std::make_unique<PReLUKernel>(static_cast<const PReLULayer&>(layer));
}

}  // namespace espresso::cpu
