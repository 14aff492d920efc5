// BatchNorm as a per-channel multiply-add, its coefficients derived from the statistics on each
// run so that weights changed after planning are honoured.
#include "layers/batch_norm.h"

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"

namespace espresso::cpu {
namespace {

class BatchNormKernel final : public Kernel {
 public:
  explicit BatchNormKernel(const BatchNormLayer& layer) : layer_(layer) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const Shape& shape = inputs[0].shape();
    layer_.affine(multiplier_, offset_);
    const AxisSplit split{shape[0], BatchNormLayer::channels(shape), shape.count(2)};
    channel_affine(inputs[0].data<float>(), outputs[0].data<float>(), split, multiplier_.data(),
                   offset_.data());
  }
  const char* name() const override { return channel_affine_name(); }

 private:
  const BatchNormLayer& layer_;
  std::vector<float> multiplier_, offset_;
};

}  // namespace

std::unique_ptr<Kernel> make_batch_norm(const Layer& layer, const std::vector<Shape>&) {
  // The channel affine folds in the stored statistics; batch statistics take the reference.
  if (static_cast<const BatchNormLayer&>(layer).batch_statistics()) return nullptr;
  return std::make_unique<BatchNormKernel>(static_cast<const BatchNormLayer&>(layer));
}

}  // namespace espresso::cpu
