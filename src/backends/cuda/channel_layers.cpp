// Scale and Bias on the GPU: each is a per-channel affine map (channel_affine.h).
#include "backends/cuda/channel_affine.h"
#include "backends/cuda/kernels.h"
#include "layers/bias.h"
#include "layers/scale.h"

namespace espresso::cuda {
namespace {

// Where a per-channel parameter comes from and where its gradient goes: a learned weight (its
// device tensor, and its index among the weight gradients), or an input of the layer (the
// two-input forms of Scale and Bias), read at each forward.
struct Parameter {
  const float* weight = nullptr;
  int weight_index = -1;
  int input = -1;  // index into the layer's inputs, or -1

  static Parameter learned(const float* weight, std::size_t index) {
    return {weight, static_cast<int>(index), -1};
  }
  static Parameter given(int input) { return {nullptr, -1, input}; }

  const float* resolve(const std::vector<Tensor>& inputs) const {
    return input >= 0 ? inputs[static_cast<std::size_t>(input)].data<float>() : weight;
  }
  // The gradient to add into, or null when none is wanted (or there is no parameter).
  float* gradient(std::vector<Tensor>& input_grads, std::vector<Tensor>& weight_grads) const {
    Tensor* grad = input >= 0          ? &input_grads[static_cast<std::size_t>(input)]
                   : weight_index >= 0 ? &weight_grads[static_cast<std::size_t>(weight_index)]
                                       : nullptr;
    return grad != nullptr && grad->defined() ? grad->data<float>() : nullptr;
  }
};

// x, y and their gradients stored in `dtype` (f32, or f16 / bf16 with learned parameters only); the
// parameters and their gradients are fp32.
class ChannelAffineKernel final : public CudaKernel {
 public:
  ChannelAffineKernel(Parameter scale, Parameter shift, const ChannelExtent& extent, DType dtype,
                      StreamContext& context)
      : CudaKernel(context), scale_(scale), shift_(shift), extent_(extent), dtype_(dtype) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    channel_affine(context_, dtype_, inputs[0].raw(), scale_.resolve(inputs), shift_.resolve(inputs),
                   outputs[0].raw(), extent_);
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    const void* dy = output_grads[0].raw();
    if (input_grads[0].defined())
      channel_scale_add(context_, dtype_, dy, scale_.resolve(inputs), input_grads[0].raw(), extent_);
    channel_parameter_grads(context_, dtype_, dy, inputs[0].raw(), scale_.gradient(input_grads, weight_grads),
                            shift_.gradient(input_grads, weight_grads), extent_);
  }

 private:
  Parameter scale_, shift_;
  ChannelExtent extent_;
  DType dtype_;
};

ChannelExtent extent_of(const AxisSplit& split) { return {split.outer, split.channels, split.inner}; }

// A split over the channels of an N, C, H, W input stored channels-last: N·H·W rows of C; false for
// parameters over other axes.
bool channels_last_extent(const AxisSplit& split, const Shape& input, ChannelExtent& extent) {
  if (input.rank() != 4 || split.channels != input[1] || split.inner != input[2] * input[3]) return false;
  extent = {split.outer * split.inner, split.channels, 1};
  return true;
}

// The learned weight `index` of the layer on the device.
Parameter learned(const Layer& layer, std::size_t index, StreamContext& context) {
  return Parameter::learned(
      context.device_weights(layer.weights()[index], "layer '" + layer.name() + "'").data<float>(), index);
}

}  // namespace

std::unique_ptr<Kernel> make_bias(const Layer& layer, const std::vector<Shape>& inputs,
                                  StreamContext& context) {
  const auto& bias = static_cast<const BiasLayer&>(layer);
  const Parameter shift = inputs.size() == 2 ? Parameter::given(1) : learned(layer, 0, context);
  return std::make_unique<ChannelAffineKernel>(Parameter{}, shift, extent_of(bias.split(inputs)), DType::f32,
                                               context);
}

std::unique_ptr<Kernel> make_scale(const Layer& layer, const std::vector<Shape>& inputs,
                                   StreamContext& context) {
  const auto& scale = static_cast<const ScaleLayer&>(layer);
  const Parameter factor = inputs.size() == 2 ? Parameter::given(1) : learned(layer, 0, context);
  const Parameter shift =
      scale.has_bias() ? learned(layer, layer.weights().size() - 1, context) : Parameter{};
  return std::make_unique<ChannelAffineKernel>(factor, shift, extent_of(scale.split(inputs)), DType::f32,
                                               context);
}

namespace {

// Scale or Bias in fp16 / bf16 with learned parameters (the two-input forms stay fp32), over `extent`.
std::unique_ptr<Kernel> learned_affine(const Layer& layer, const ChannelExtent& extent, DType dtype,
                                       StreamContext& context) {
  if (layer.type() == "Bias")
    return std::make_unique<ChannelAffineKernel>(Parameter{}, learned(layer, 0, context), extent, dtype,
                                                 context);
  const Parameter shift = static_cast<const ScaleLayer&>(layer).has_bias()
                              ? learned(layer, layer.weights().size() - 1, context)
                              : Parameter{};
  return std::make_unique<ChannelAffineKernel>(learned(layer, 0, context), shift, extent, dtype, context);
}

// The parameters' split of the layer's input.
AxisSplit split_of(const Layer& layer, const std::vector<Shape>& inputs) {
  return layer.type() == "Bias" ? static_cast<const BiasLayer&>(layer).split(inputs)
                                : static_cast<const ScaleLayer&>(layer).split(inputs);
}

std::unique_ptr<Kernel> lowp_affine(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                    StreamContext& context) {
  if (inputs.size() != 1) return nullptr;
  return learned_affine(layer, extent_of(split_of(layer, inputs)), dtype, context);
}

// Channels-last: N·H·W rows of C, where the parameters run along the channels.
std::unique_ptr<Kernel> channels_last_affine(const Layer& layer, const std::vector<Shape>& inputs,
                                             DType dtype, StreamContext& context) {
  ChannelExtent extent;
  if (inputs.size() != 1 || !channels_last_extent(split_of(layer, inputs), inputs[0], extent)) return nullptr;
  return learned_affine(layer, extent, dtype, context);
}

}  // namespace

std::unique_ptr<Kernel> make_lowp_bias(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                       StreamContext& context) {
  return lowp_affine(layer, inputs, dtype, context);
}

std::unique_ptr<Kernel> make_lowp_scale(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                        StreamContext& context) {
  return lowp_affine(layer, inputs, dtype, context);
}

std::unique_ptr<Kernel> make_nhwc_bias(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                       StreamContext& context) {
  return channels_last_affine(layer, inputs, dtype, context);
}

std::unique_ptr<Kernel> make_nhwc_scale(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                        StreamContext& context) {
  return channels_last_affine(layer, inputs, dtype, context);
}

}  // namespace espresso::cuda
