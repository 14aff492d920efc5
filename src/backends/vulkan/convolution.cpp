// Convolution and Deconvolution on Vulkan over 1 or 2 spatial axes. Convolution: an implicit GEMM (im2col
// gathered while loading tiles, never stored; split along k where the output has too few tiles to fill a
// GPU) for every configuration, and a direct kernel for depthwise convolutions, where a GEMM of one output
// channel per group would leave the tiles almost empty. Deconvolution: a direct kernel.
#include "layers/convolution.h"

#include <limits>
#include <string>

#include "backends/vulkan/kernels.h"
#include "layers/deconvolution.h"

namespace espresso::vulkan {
namespace {

struct Geometry2d {
  std::uint32_t in_h, in_w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w;
  std::int32_t pad_h, pad_w;
  std::uint32_t dilation_h, dilation_w;
};

// 1-D geometry as 2-D with a height of 1.
Geometry2d planar(const ConvGeometry& g) {
  const int a = g.axes();
  auto at = [&](const std::vector<std::int64_t>& v, int axis, std::int64_t one) {
    return a == 2 ? v[static_cast<std::size_t>(axis)] : (axis == 0 ? one : v[0]);
  };
  return {u32(at(g.in_size, 0, 1)),  u32(at(g.in_size, 1, 1)),  u32(at(g.out_size, 0, 1)), u32(at(g.out_size, 1, 1)),
          u32(at(g.kernel, 0, 1)),   u32(at(g.kernel, 1, 1)),   u32(at(g.stride, 0, 1)),   u32(at(g.stride, 1, 1)),
          static_cast<std::int32_t>(at(g.pad, 0, 0)), static_cast<std::int32_t>(at(g.pad, 1, 0)),
          u32(at(g.dilation, 0, 1)), u32(at(g.dilation, 1, 1))};
}

constexpr float kInfinity = std::numeric_limits<float>::infinity();

std::int64_t round_up(std::int64_t value, std::int64_t step) { return (value + step - 1) / step * step; }

// The weights as convolution.glsl reads them, packed once at load: [group][k][m] with k (input channel,
// kernel row, kernel column) padded to `packed_k` and m (the group's output channels) to `packed_m`, zeros
// in the padding. One device copy per weight tensor and packing, shared by the device's streams (the
// sessions of one model) as its resident weights are.
Tensor pack_weights(const Tensor& weights, std::int64_t group, std::int64_t packed_k, std::int64_t packed_m,
                    const std::string& owner, StreamContext& context) {
  const Shape shape{group, packed_k, packed_m};
  const std::string key = "convolution weights " +
                          std::to_string(reinterpret_cast<std::uintptr_t>(weights.raw())) + " version " +
                          std::to_string(weights.version()) + " as " + shape.str();
  std::shared_ptr<void> memory = context.context().shared_transform(key, [&] {
    const Tensor host = weights.device().is_cpu() ? weights : weights.to(Device::cpu());
    const std::int64_t group_out = host.shape()[0] / group, k = host.numel() / host.shape()[0];
    std::vector<float> packed(static_cast<std::size_t>(shape.numel()), 0.0f);
    const float* w = host.data<float>();
    for (std::int64_t g = 0; g < group; ++g) {
      for (std::int64_t m = 0; m < group_out; ++m) {
        const float* row = w + (g * group_out + m) * k;
        float* column = packed.data() + g * packed_k * packed_m + m;
        for (std::int64_t i = 0; i < k; ++i) column[i * packed_m] = row[i];
      }
    }
    std::shared_ptr<void> device =
        context.context().allocate(packed.size() * sizeof(float), "the packed weights of " + owner);
    context.context().upload(device.get(), packed.data(), packed.size() * sizeof(float));
    return device;
  });
  return Tensor::wrap(memory.get(), shape, DType::f32, context.device(), memory);
}

// The steps after a convolution it takes over at inference (Net's fuse_steps): a residual Add of
// the output's shape, then a clamp (ReLU, ReLU6), applied as the shaders write the output.
class FusingConvolution : public VulkanKernel {
 public:
  using VulkanKernel::VulkanKernel;
  bool fuse_clamp(float lo, float hi) override {
    if (lo_ != -kInfinity || hi_ != kInfinity) return false;
    lo_ = lo;
    hi_ = hi;
    return true;
  }

 protected:
  float lo_ = -kInfinity, hi_ = kInfinity;
};

class GemmConvolution final : public FusingConvolution {
 public:
  GemmConvolution(const ConvGeometry& g, const Tensor& weights, Tensor bias, const std::string& owner,
                  StreamContext& context)
      : FusingConvolution(context), bias_(std::move(bias)) {
    const Geometry2d p = planar(g);
    const std::int64_t group_out = g.out_channels / g.group;
    const std::int64_t k = (g.in_channels / g.group) * g.kernel_spatial();
    columns_ = g.batch * g.out_spatial();
    weights_ = pack_weights(weights, g.group, round_up(k, 16), round_up(group_out, 64), owner, context);
    params_ = {u32(g.batch),
               u32(g.in_channels),
               p.in_h,
               p.in_w,
               u32(g.out_channels),
               p.out_h,
               p.out_w,
               p.kernel_h,
               p.kernel_w,
               p.stride_h,
               p.stride_w,
               p.pad_h,
               p.pad_w,
               p.dilation_h,
               p.dilation_w,
               u32(g.in_channels / g.group),
               u32(group_out),
               bias_.defined() ? 1u : 0u,
               1u,
               0u,
               0u,
               0.0f,
               0.0f,
               u32(round_up(k, 16)),
               u32(round_up(group_out, 64))};
    group_ = u32(g.group);
    // Too few output tiles to fill a GPU (small images at batch 1) and a long sum: split k over more work
    // groups, each adding its stretch into a partial sum, then add the partial sums up.
    const std::int64_t tiles = groups(columns_, 64) * groups(group_out, 64) * g.group;
    std::int64_t splits = 1;
    if (tiles < kFillTiles && k >= 512) splits = std::min((kFillTiles + tiles - 1) / tiles, k / 256);
    const std::int64_t chunk = ((k + splits - 1) / splits + 15) / 16 * 16;
    splits = (k + chunk - 1) / chunk;
    params_.k_chunk = u32(chunk);
    if (splits > 1 && g.group * splits <= 65535) {
      params_.k_splits = u32(splits);
      partial_ = context.scratch(Shape{splits, g.out_channels, columns_}, owner);
    }
  }
  bool fuse_residual(const Tensor& residual) override {
    if (residual_.address != nullptr || lo_ != -kInfinity || hi_ != kInfinity ||
        residual.dtype() != (half_ ? DType::f16 : DType::f32))
      return false;
    residual_ = buffer(residual);
    return true;
  }
  // The Add runs in place on the residual (a ResNet block whose shortcut convolution comes second): the
  // output goes there, added to what is there.
  bool accumulate_output(float* base, std::int64_t image_stride) override {
    if (half_ || residual_.address != nullptr || lo_ != -kInfinity || hi_ != kInfinity ||
        image_stride != std::int64_t{params_.out_c} * params_.out_h * params_.out_w) {
      return false;
    }
    residual_ = {base, static_cast<std::size_t>(columns_ * params_.out_c) * sizeof(float)};
    destination_ = residual_;
    return true;
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (outputs[0].numel() == 0) return;
    const Buffer bias = buffer(bias_.defined() ? bias_ : weights_);
    const Buffer out = destination_.address != nullptr ? destination_ : buffer(outputs[0]);
    const Buffer residual = residual_.address != nullptr ? residual_ : out;
    const bool split = params_.k_splits > 1;
    params_.lo = lo_;
    params_.hi = hi_;
    params_.has_residual = residual_.address != nullptr ? 1u : 0u;
    context_.dispatch(
        shader("convolution"),
        {buffer(inputs[0]), buffer(weights_), bias, out, residual, split ? buffer(partial_) : out}, params_,
        groups(columns_, 64), groups(params_.group_out, 64), group_ * params_.k_splits);
    if (!split) return;
    struct {
      std::uint32_t n, channels, plane, splits, has_bias, has_residual;
      float lo, hi;
    } sum{u32(outputs[0].numel()),
          params_.out_c,
          params_.out_h * params_.out_w,
          params_.k_splits,
          params_.has_bias,
          params_.has_residual,
          lo_,
          hi_};
    context_.dispatch(shader("split_sum"), {buffer(partial_), bias, out, residual}, sum,
                      groups(outputs[0].numel()));
  }
  const char* name() const override {
    return params_.k_splits > 1 ? "vulkan implicit-gemm split-k" : "vulkan implicit-gemm";
  }

 private:
  static constexpr std::int64_t kFillTiles = 128;
  Tensor weights_, bias_, partial_;
  Buffer residual_{nullptr, 0}, destination_{nullptr, 0};  // fused: the residual read, the output's memory
  struct {
    std::uint32_t batch, in_c, in_h, in_w, out_c, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w;
    std::int32_t pad_h, pad_w;
    std::uint32_t dilation_h, dilation_w, group_in, group_out, has_bias, k_splits, k_chunk, has_residual;
    float lo, hi;
    std::uint32_t packed_k, packed_m;
  } params_{};
  std::uint32_t group_ = 1;
  std::int64_t columns_ = 0;
};

class DepthwiseConvolution final : public FusingConvolution {
 public:
  DepthwiseConvolution(const ConvGeometry& g, Tensor weights, Tensor bias, StreamContext& context)
      : FusingConvolution(context), weights_(std::move(weights)), bias_(std::move(bias)) {
    const Geometry2d p = planar(g);
    n_ = g.batch * g.out_channels * g.out_spatial();
    params_ = {u32(n_),     u32(g.out_channels), p.in_h,     p.in_w,     p.out_h,      p.out_w,      p.kernel_h,
               p.kernel_w,  p.stride_h,          p.stride_w, p.pad_h,    p.pad_w,      p.dilation_h, p.dilation_w,
               bias_.defined() ? 1u : 0u};
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (n_ == 0) return;
    params_.lo = lo_;
    params_.hi = hi_;
    context_.dispatch(
        shader("depthwise"),
        {buffer(inputs[0]), buffer(weights_), buffer(bias_.defined() ? bias_ : weights_), buffer(outputs[0])},
        params_, groups(n_));
  }
  const char* name() const override { return "vulkan depthwise"; }

 private:
  Tensor weights_, bias_;
  std::int64_t n_ = 0;
  struct {
    std::uint32_t n, channels, in_h, in_w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w;
    std::int32_t pad_h, pad_w;
    std::uint32_t dilation_h, dilation_w, has_bias;
    float lo, hi;
  } params_{};
};

class DirectDeconvolution final : public VulkanKernel {
 public:
  DirectDeconvolution(const ConvGeometry& g, Tensor weights, Tensor bias, StreamContext& context)
      : VulkanKernel(context), weights_(std::move(weights)), bias_(std::move(bias)) {
    const Geometry2d p = planar(g);
    n_ = g.batch * g.out_channels * g.out_spatial();
    params_ = {u32(n_),     u32(g.in_channels), p.in_h,     p.in_w,       u32(g.out_channels), p.out_h,
               p.out_w,     p.kernel_h,         p.kernel_w, p.stride_h,   p.stride_w,          p.pad_h,
               p.pad_w,     p.dilation_h,       p.dilation_w, u32(g.in_channels / g.group),
               u32(g.out_channels / g.group),   bias_.defined() ? 1u : 0u};
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (n_ == 0) return;
    context_.dispatch("deconvolution",
                      {buffer(inputs[0]), buffer(weights_), buffer(bias_.defined() ? bias_ : weights_),
                       buffer(outputs[0])},
                      params_, groups(n_));
  }
  const char* name() const override { return "vulkan direct"; }

 private:
  Tensor weights_, bias_;
  std::int64_t n_ = 0;
  struct {
    std::uint32_t n, in_c, in_h, in_w, out_c, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w;
    std::int32_t pad_h, pad_w;
    std::uint32_t dilation_h, dilation_w, group_in, group_out, has_bias;
  } params_{};
};

}  // namespace

std::unique_ptr<Kernel> make_deconvolution(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context) {
  const auto& deconv = static_cast<const DeconvolutionLayer&>(layer);
  if (inputs.size() != 1) return nullptr;
  const ConvGeometry g = deconv.geometry(inputs[0]);
  if (g.axes() < 1 || g.axes() > 2) return nullptr;
  Tensor weights = weight(layer, 0, context);
  Tensor bias = deconv.has_bias() ? weight(layer, 1, context) : Tensor{};
  return std::make_unique<DirectDeconvolution>(g, std::move(weights), std::move(bias), context);
}

std::unique_ptr<Kernel> make_convolution(const Layer& layer, const std::vector<Shape>& inputs,
                                         StreamContext& context) {
  const auto& conv = static_cast<const ConvolutionLayer&>(layer);
  if (inputs.size() != 1) return nullptr;
  const ConvGeometry g = conv.geometry(inputs[0]);
  if (g.axes() < 1 || g.axes() > 2) return nullptr;
  // The shaders read fp32 weights; others (a quantized model's) run on the CPU.
  if (layer.weights()[0].dtype() != DType::f32) return nullptr;
  const bool depthwise = g.group == g.in_channels && g.group == g.out_channels && g.group > 1;
  // The GEMM's grid is one work group per 64 x 64 tile, not looped over: beyond the device's grid (65,535
  // columns of tiles on many), the CPU runs the layer.
  const std::uint32_t* most = context.context().physical().properties.limits.maxComputeWorkGroupCount;
  if (!depthwise &&
      (groups(g.batch * g.out_spatial(), 64) > most[0] || groups(g.out_channels / g.group, 64) > most[1])) {
    return nullptr;
  }
  Tensor bias = conv.has_bias() ? weight(layer, 1, context) : Tensor{};
  if (depthwise) {
    return std::make_unique<DepthwiseConvolution>(g, weight(layer, 0, context), std::move(bias), context);
  }
  return std::make_unique<GemmConvolution>(g, layer.weights()[0], std::move(bias),
                                           "layer '" + layer.name() + "'", context);
}

}  // namespace espresso::vulkan
