// BatchNorm, Scale and Bias on the GPU: each is a per-channel affine map (channel_affine.h).
#include "backends/cuda/channel_affine.h"
#include "backends/cuda/kernels.h"
#include "layers/batch_norm.h"
#include "layers/bias.h"
#include "layers/scale.h"

namespace espresso::cuda {
namespace {

// Where a per-channel parameter comes from: a fixed device buffer (learned weights), or an input
// of the layer (the two-input forms of Scale and Bias), read at each forward.
struct Parameter {
  const float* fixed = nullptr;
  int input = -1;  // index into the layer's inputs, or -1

  const float* resolve(const std::vector<Tensor>& inputs) const {
    return input >= 0 ? inputs[static_cast<std::size_t>(input)].data<float>() : fixed;
  }
};

class ChannelAffineKernel final : public Kernel {
 public:
  ChannelAffineKernel(Parameter scale, Parameter shift, const ChannelExtent& extent, StreamContext& context,
                      std::shared_ptr<void> owned = {})
      : scale_(scale), shift_(shift), extent_(extent), context_(context), owned_(std::move(owned)) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    channel_affine(context_, inputs[0].data<float>(), scale_.resolve(inputs), shift_.resolve(inputs),
                   outputs[0].data<float>(), extent_);
  }
  const char* name() const override { return "cuda"; }

 private:
  Parameter scale_, shift_;
  ChannelExtent extent_;
  StreamContext& context_;
  std::shared_ptr<void> owned_;  // parameters computed at plan time, when the kernel holds them
};

ChannelExtent extent_of(const AxisSplit& split) { return {split.outer, split.channels, split.inner}; }

const float* device_weight(const Layer& layer, const Tensor& weight, StreamContext& context) {
  return context.device_weights(weight, "layer '" + layer.name() + "'").data<float>();
}

}  // namespace

std::unique_ptr<Kernel> make_batch_norm(const Layer& layer, const std::vector<Shape>& inputs,
                                        StreamContext& context) {
  const auto& bn = static_cast<const BatchNormLayer&>(layer);
  // Training with batch statistics is not a fixed affine map; the GPU has no kernel for it yet.
  if (bn.batch_statistics()) return nullptr;
  std::vector<float> multiplier, offset;
  bn.affine(multiplier, offset);
  const std::size_t channels = multiplier.size();
  // Both vectors in one device block, uploaded now: the statistics never change.
  std::vector<float> packed(multiplier);
  packed.insert(packed.end(), offset.begin(), offset.end());
  auto block = allocate(packed.size() * sizeof(float), context.device(),
                        "the BatchNorm affine of layer '" + layer.name() + "'");
  copy(block.get(), context.device(), packed.data(), Device::cpu(), packed.size() * sizeof(float));
  const auto* base = static_cast<const float*>(block.get());
  const Shape& shape = inputs[0];
  const std::int64_t inner = shape.count(2);
  const auto per_image = static_cast<std::int64_t>(channels) * inner;
  const ChannelExtent extent{per_image == 0 ? 0 : shape.numel() / per_image,
                             static_cast<std::int64_t>(channels), inner};
  return std::make_unique<ChannelAffineKernel>(Parameter{base, -1}, Parameter{base + channels, -1}, extent,
                                               context, std::move(block));
}

std::unique_ptr<Kernel> make_bias(const Layer& layer, const std::vector<Shape>& inputs,
                                  StreamContext& context) {
  const auto& bias = static_cast<const BiasLayer&>(layer);
  const Parameter shift = inputs.size() == 2
                              ? Parameter{nullptr, 1}
                              : Parameter{device_weight(layer, layer.weights()[0], context), -1};
  return std::make_unique<ChannelAffineKernel>(Parameter{}, shift, extent_of(bias.split(inputs)), context);
}

std::unique_ptr<Kernel> make_scale(const Layer& layer, const std::vector<Shape>& inputs,
                                   StreamContext& context) {
  const auto& scale = static_cast<const ScaleLayer&>(layer);
  const Parameter factor = inputs.size() == 2
                               ? Parameter{nullptr, 1}
                               : Parameter{device_weight(layer, layer.weights()[0], context), -1};
  const Parameter shift =
      scale.has_bias() ? Parameter{device_weight(layer, layer.weights().back(), context), -1} : Parameter{};
  return std::make_unique<ChannelAffineKernel>(factor, shift, extent_of(scale.split(inputs)), context);
}

}  // namespace espresso::cuda
