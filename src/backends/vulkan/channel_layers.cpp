// Per-channel affine layers on Vulkan: Scale, Bias and BatchNorm at inference (its statistics folded
// into a multiplier and an offset per channel when the kernel is made).
#include "backends/vulkan/kernels.h"
#include "layers/batch_norm.h"
#include "layers/bias.h"
#include "layers/scale.h"

namespace espresso::vulkan {
namespace {

// Where a per-channel parameter comes from: a device tensor fixed when the kernel is made, or an input
// of the layer (the two-input forms of Scale and Bias).
struct Parameter {
  Tensor fixed;
  int input = -1;
  bool present() const { return input >= 0 || fixed.defined(); }
  Buffer resolve(const std::vector<Tensor>& inputs, const Tensor& fallback) const {
    if (input >= 0) return buffer(inputs[static_cast<std::size_t>(input)]);
    return buffer(fixed.defined() ? fixed : fallback);
  }
};

class AffineKernel final : public VulkanKernel {
 public:
  AffineKernel(Parameter scale, Parameter shift, const AxisSplit& split, StreamContext& context)
      : VulkanKernel(context), scale_(std::move(scale)), shift_(std::move(shift)), split_(split) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    struct {
      std::uint32_t n, channels, inner, flags;
    } params{u32(n), u32(split_.channels), u32(std::max<std::int64_t>(split_.inner, 1)),
             (scale_.present() ? 1u : 0u) | (shift_.present() ? 2u : 0u)};
    // An absent parameter binds the input in its place; the shader never reads it.
    context_.dispatch(shader("affine"),
                      {buffer(inputs[0]), scale_.resolve(inputs, inputs[0]),
                       shift_.resolve(inputs, inputs[0]), buffer(outputs[0])},
                      params, groups(n));
  }

 private:
  Parameter scale_, shift_;
  AxisSplit split_;
};

Parameter learned(const Layer& layer, std::size_t index, StreamContext& context) {
  return {weight(layer, index, context), -1};
}

Parameter uploaded(const std::vector<float>& values, const Layer& layer, StreamContext& context) {
  Tensor t = context.scratch(Shape{static_cast<std::int64_t>(values.size())}, "layer '" + layer.name() + "'");
  t.copy_from(Tensor::from(Shape{static_cast<std::int64_t>(values.size())}, values));
  return {t, -1};
}

// The two-input forms take their parameter from an activation, which an fp16 net keeps in fp16, while
// affine.comp reads parameters in fp32: those run in fp32.
bool parameter_input_in_half(const std::vector<Shape>& inputs, const StreamContext& context) {
  return inputs.size() == 2 && context.kernel_dtype() == DType::f16;
}

}  // namespace

std::unique_ptr<Kernel> make_bias(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  const auto& bias = static_cast<const BiasLayer&>(layer);
  if (parameter_input_in_half(inputs, context)) return nullptr;
  Parameter shift = inputs.size() == 2 ? Parameter{Tensor{}, 1} : learned(layer, 0, context);
  return std::make_unique<AffineKernel>(Parameter{}, std::move(shift), bias.split(inputs), context);
}

std::unique_ptr<Kernel> make_scale(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  const auto& scale = static_cast<const ScaleLayer&>(layer);
  if (parameter_input_in_half(inputs, context)) return nullptr;
  Parameter factor = inputs.size() == 2 ? Parameter{Tensor{}, 1} : learned(layer, 0, context);
  Parameter shift = scale.has_bias() ? learned(layer, layer.weights().size() - 1, context) : Parameter{};
  return std::make_unique<AffineKernel>(std::move(factor), std::move(shift), scale.split(inputs), context);
}

std::unique_ptr<Kernel> make_batch_norm(const Layer& layer, const std::vector<Shape>& inputs,
                                        StreamContext& context) {
  const auto& bn = static_cast<const BatchNormLayer&>(layer);
  // Statistics of the batch (training) and statistics that change (a training net's device blobs)
  // cannot be folded once.
  if (bn.batch_statistics() || !layer.weights()[0].device().is_cpu()) return nullptr;
  std::vector<float> multiplier, offset;
  bn.affine(multiplier, offset);
  const Shape& shape = inputs[0];
  const std::int64_t channels = BatchNormLayer::channels(shape), inner = shape.rank() > 2 ? shape.count(2) : 1;
  const std::int64_t per_image = channels * inner;
  const AxisSplit split{per_image == 0 ? 0 : shape.numel() / per_image, channels, inner};
  return std::make_unique<AffineKernel>(uploaded(multiplier, layer, context), uploaded(offset, layer, context), split,
                                        context);
}

}  // namespace espresso::vulkan
