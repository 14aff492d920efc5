// Element-wise layers on Vulkan: ReLU, the functions of Activation, and Binary with numpy broadcasting.
#include "backends/vulkan/kernels.h"
#include "layers/activation.h"
#include "layers/binary.h"
#include "layers/prelu.h"
#include "layers/relu.h"

namespace espresso::vulkan {
namespace {

class ReLUKernel final : public VulkanKernel {
 public:
  ReLUKernel(float slope, StreamContext& context) : VulkanKernel(context), slope_(slope) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    struct {
      std::uint32_t n;
      float slope;
    } params{u32(n), slope_};
    context_.dispatch(shader("relu"), {buffer(inputs[0]), buffer(outputs[0])}, params, groups(n));
  }

 private:
  float slope_;
};

class PReLUKernel final : public VulkanKernel {
 public:
  PReLUKernel(Tensor slope, std::int64_t channels, std::int64_t inner, StreamContext& context)
      : VulkanKernel(context), slope_(std::move(slope)), channels_(channels), inner_(inner) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    struct {
      std::uint32_t n, channels, inner;
    } params{u32(n), u32(channels_), u32(std::max<std::int64_t>(inner_, 1))};
    context_.dispatch("prelu", {buffer(inputs[0]), buffer(slope_), buffer(outputs[0])}, params, groups(n));
  }

 private:
  Tensor slope_;
  std::int64_t channels_, inner_;
};

class ActivationKernel final : public VulkanKernel {
 public:
  ActivationKernel(const ActivationLayer& layer, StreamContext& context) : VulkanKernel(context), layer_(layer) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = inputs[0].numel();
    if (n == 0) return;
    struct {
      std::uint32_t n, function;
      float alpha, beta, gamma, lo, hi;
    } params{u32(n),
             static_cast<std::uint32_t>(layer_.function()),
             static_cast<float>(layer_.alpha()),
             static_cast<float>(layer_.beta()),
             static_cast<float>(layer_.gamma()),
             static_cast<float>(layer_.min()),
             static_cast<float>(layer_.max())};
    context_.dispatch(shader("activation"), {buffer(inputs[0]), buffer(outputs[0])}, params, groups(n));
  }

 private:
  const ActivationLayer& layer_;
};

constexpr int kMaxRank = 6;

class BinaryKernel final : public VulkanKernel {
 public:
  BinaryKernel(BinaryLayer::Op op, const Shape& a, const Shape& b, StreamContext& context)
      : VulkanKernel(context) {
    const Shape out = broadcast_shapes(a, b);
    params_.op = static_cast<std::uint32_t>(op);
    params_.rank = static_cast<std::uint32_t>(out.rank());
    params_.n = u32(out.numel());
    // Strides of each input over the output's dims, 0 where it broadcasts.
    auto strides = [&](const Shape& s, std::uint32_t* into) {
      std::int64_t stride = 1;
      for (int o = out.rank() - 1; o >= 0; --o) {
        const int i = o - (out.rank() - s.rank());
        const std::int64_t d = i >= 0 ? s[i] : 1;
        into[o] = d == 1 ? 0 : u32(stride);
        stride *= d;
      }
    };
    for (int o = 0; o < out.rank(); ++o) params_.dims[o] = u32(out[o]);
    strides(a, params_.stride_a);
    strides(b, params_.stride_b);
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (params_.n == 0) return;
    context_.dispatch(shader("binary"), {buffer(inputs[0]), buffer(inputs[1]), buffer(outputs[0])}, params_,
                      groups(params_.n));
  }

 private:
  struct {
    std::uint32_t n = 0, op = 0, rank = 0;
    std::uint32_t dims[kMaxRank] = {}, stride_a[kMaxRank] = {}, stride_b[kMaxRank] = {};
  } params_;
};

}  // namespace

std::unique_ptr<Kernel> make_relu(const Layer& layer, const std::vector<Shape>&, StreamContext& context) {
  return std::make_unique<ReLUKernel>(static_cast<const ReLULayer&>(layer).negative_slope(), context);
}

std::unique_ptr<Kernel> make_prelu(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  const auto& prelu = static_cast<const PReLULayer&>(layer);
  const Shape& shape = inputs[0];
  const std::int64_t channels = prelu.channel_shared() || shape.rank() < 2 ? 1 : shape[1];
  const std::int64_t inner = shape.rank() < 2 ? shape.numel() : shape.count(2);
  return std::make_unique<PReLUKernel>(weight(layer, 0, context), channels, inner, context);
}

std::unique_ptr<Kernel> make_activation(const Layer& layer, const std::vector<Shape>&, StreamContext& context) {
  const auto& activation = static_cast<const ActivationLayer&>(layer);
  // Rounding to float16 needs exact round-to-nearest-even, which GLSL's packHalf2x16 does not promise.
  if (activation.function() == ActivationLayer::Function::float16) return nullptr;
  return std::make_unique<ActivationKernel>(activation, context);
}

std::unique_ptr<Kernel> make_binary(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  if (inputs.size() != 2) return nullptr;
  const Shape out = broadcast_shapes(inputs[0], inputs[1]);
  if (out.rank() > kMaxRank) return nullptr;
  return std::make_unique<BinaryKernel>(static_cast<const BinaryLayer&>(layer).op(), inputs[0], inputs[1], context);
}

}  // namespace espresso::vulkan
