// Convolution and Deconvolution on Vulkan over 1 or 2 spatial axes. Convolution: an implicit GEMM (im2col
// gathered while loading tiles, never stored; split along k where the output has too few tiles to fill a
// GPU) for every configuration, Winograd F(2x2, 3x3) for 3 x 3 windows of stride 1, and a direct kernel for
// depthwise convolutions, where a GEMM of one output channel per group would leave the tiles almost
// empty. Deconvolution: a direct kernel.
#include "layers/convolution.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <string>

#include "backends/tactic_cache.h"
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

// convolution.glsl's push constants after the buffers' offsets.
struct GemmParams {
  std::uint32_t batch, in_c, in_h, in_w, out_c, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w;
  std::int32_t pad_h, pad_w;
  std::uint32_t dilation_h, dilation_w, group_in, group_out, has_bias, k_splits, k_chunk, has_residual;
  float lo, hi;
  std::uint32_t packed_k, packed_m;
};

// One pass over k, no bias, no epilogue: the callers set those.
GemmParams gemm_params(const ConvGeometry& g) {
  const Geometry2d p = planar(g);
  const std::int64_t group_out = g.out_channels / g.group;
  const std::uint32_t packed_k = u32(round_up((g.in_channels / g.group) * g.kernel_spatial(), 16));
  return {u32(g.batch),
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
          0u,
          1u,
          packed_k,
          0u,
          -kInfinity,
          kInfinity,
          packed_k,
          u32(round_up(group_out, 64))};
}

// The weights as convolution.glsl reads them, packed once at load: [group][k][m] with k padded to
// packed_k and m (the group's output channels) to packed_m, zeros in the padding. `rows` makes the
// [group · group_out][k] matrix from the host weights (Caffe's layout as it is, or Winograd's transform);
// `layout` names it in the cache key. One device copy per weight tensor and layout, shared by the
// device's streams (the sessions of one model) as its resident weights are.
using WeightRows = std::vector<float> (*)(const Tensor& host);

Tensor pack_weights(const Tensor& weights, const char* layout, WeightRows rows, const GemmParams& p,
                    std::int64_t group, const std::string& owner, StreamContext& context) {
  const Shape shape{group, p.packed_k, p.packed_m};
  const std::string key = std::string("convolution weights ") + layout + " " +
                          std::to_string(reinterpret_cast<std::uintptr_t>(weights.raw())) + " version " +
                          std::to_string(weights.version()) + " as " + shape.str();
  std::shared_ptr<void> memory = context.context().shared_transform(key, [&] {
    const std::vector<float> w = rows(weights.device().is_cpu() ? weights : weights.to(Device::cpu()));
    const std::int64_t k = std::int64_t{p.group_in} * p.kernel_h * p.kernel_w;
    std::vector<float> packed(static_cast<std::size_t>(shape.numel()), 0.0f);
    for (std::int64_t g = 0; g < group; ++g) {
      for (std::int64_t m = 0; m < p.group_out; ++m) {
        const float* row = w.data() + (g * p.group_out + m) * k;
        float* column = packed.data() + (g * p.packed_k) * p.packed_m + m;
        for (std::int64_t i = 0; i < k; ++i) column[i * p.packed_m] = row[i];
      }
    }
    std::shared_ptr<void> device =
        context.context().allocate(packed.size() * sizeof(float), "the packed weights of " + owner);
    context.context().upload(device.get(), packed.data(), packed.size() * sizeof(float));
    return device;
  });
  return Tensor::wrap(memory.get(), shape, DType::f32, context.device(), memory);
}

std::vector<float> caffe_rows(const Tensor& host) { return host.to_vector(); }

// Winograd F(2x2, 3x3)'s weights U = G g Gᵀ for each output channel m and input channel c, as sixteen
// matrices (e = row · 4 + column of U) of [m][c]: the rows of sixteen groups' GEMMs.
std::vector<float> winograd_rows(const Tensor& host) {
  const std::int64_t outputs = host.shape()[0], inputs = host.shape()[1];
  const float* w = host.data<float>();
  std::vector<float> u(static_cast<std::size_t>(16 * outputs * inputs));
  for (std::int64_t m = 0; m < outputs; ++m) {
    for (std::int64_t c = 0; c < inputs; ++c) {
      const float* g = w + (m * inputs + c) * 9;
      double t[4][3];  // G g
      for (int j = 0; j < 3; ++j) {
        t[0][j] = g[j];
        t[1][j] = (double{g[j]} + g[3 + j] + g[6 + j]) / 2;
        t[2][j] = (double{g[j]} - g[3 + j] + g[6 + j]) / 2;
        t[3][j] = g[6 + j];
      }
      for (int i = 0; i < 4; ++i) {
        const double row[4] = {t[i][0], (t[i][0] + t[i][1] + t[i][2]) / 2, (t[i][0] - t[i][1] + t[i][2]) / 2,
                               t[i][2]};
        for (int j = 0; j < 4; ++j)
          u[static_cast<std::size_t>(((i * 4 + j) * outputs + m) * inputs + c)] = static_cast<float>(row[j]);
      }
    }
  }
  return u;
}

// The steps after a convolution it takes over at inference (Net's fuse_steps), applied as the shaders
// write the output: a clamp (ReLU, ReLU6) ...
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

// ... and before the clamp, a residual Add of the output's shape.
class ResidualConvolution : public FusingConvolution {
 public:
  ResidualConvolution(const ConvGeometry& g, StreamContext& context)
      : FusingConvolution(context), image_size_(g.out_channels * g.out_spatial()), batch_(g.batch) {}
  bool fuse_residual(const Tensor& residual) override {
    if (residual_.address != nullptr || lo_ != -kInfinity || hi_ != kInfinity ||
        residual.dtype() != (half_ ? DType::f16 : DType::f32))
      return false;
    residual_ = buffer(residual);
    return true;
  }
  // The Add runs in place on the residual (a ResNet block whose shortcut convolution comes second): the
  // output goes there, added to what is there.
  bool accumulate_output(void* base, DType dtype, std::int64_t image_stride) override {
    if (half_ || dtype != DType::f32 || residual_.address != nullptr || lo_ != -kInfinity ||
        hi_ != kInfinity || image_stride != image_size_)
      return false;
    residual_ = {base, static_cast<std::size_t>(batch_ * image_size_) * sizeof(float)};
    destination_ = residual_;
    return true;
  }

 protected:
  Buffer output(const Tensor& tensor) const {
    return destination_.address != nullptr ? destination_ : buffer(tensor);
  }
  Buffer residual(const Buffer& output) const { return residual_.address != nullptr ? residual_ : output; }

  Buffer residual_{nullptr, 0}, destination_{nullptr, 0};  // fused: the residual read, the output's memory

 private:
  std::int64_t image_size_, batch_;
};

class GemmConvolution final : public ResidualConvolution {
 public:
  GemmConvolution(const ConvGeometry& g, const Tensor& weights, Tensor bias, const std::string& owner,
                  StreamContext& context)
      : ResidualConvolution(g, context), bias_(std::move(bias)), params_(gemm_params(g)) {
    const std::int64_t group_out = g.out_channels / g.group;
    const std::int64_t k = (g.in_channels / g.group) * g.kernel_spatial();
    columns_ = g.batch * g.out_spatial();
    weights_ = pack_weights(weights, "caffe", caffe_rows, params_, g.group, owner, context);
    params_.has_bias = bias_.defined() ? 1u : 0u;
    group_ = u32(g.group);
    // Too few output tiles to fill a GPU (small images at batch 1) and a long sum: split k over more work
    // groups, each adding its stretch into a partial sum, then add the partial sums up.
    const std::int64_t tiles = groups(columns_, 64) * groups(group_out, 64) * g.group;
    std::int64_t splits = 1;
    if (tiles < kFillTiles && k >= kSplitDepth)
      splits = std::min((kFillTiles + tiles - 1) / tiles, k / (kSplitDepth / 2));
    const std::int64_t chunk = ((k + splits - 1) / splits + 15) / 16 * 16;
    splits = (k + chunk - 1) / chunk;
    // (group · splits stays under 256: the grid holds it, as tiles ≥ groups.)
    if (splits > 1) {
      params_.k_chunk = u32(chunk);
      params_.k_splits = u32(splits);
      partial_ = context.scratch(Shape{splits, g.out_channels, columns_}, owner);
    }
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (outputs[0].numel() == 0) return;
    const Buffer bias = buffer(bias_.defined() ? bias_ : weights_);
    const Buffer out = output(outputs[0]), residual = this->residual(out);
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
  // Split k below 128 tiles where the sum is 128 deep or more, into up to k / 64 stretches (multiples of 16):
  // on an H100 that ran LeNet, NIN, ResNet-18, SqueezeNet and MobileNetV2 at batch 1 6-30 % faster than
  // splitting only sums of 512 into up to k / 256, and LeNet at batch 64 4 % faster
  // (bench/results/2026-12-06-h100-vulkan-winograd.md).
  static constexpr std::int64_t kFillTiles = 128, kSplitDepth = 128;
  Tensor weights_, bias_, partial_;
  GemmParams params_;
  std::uint32_t group_ = 1;
  std::int64_t columns_ = 0;
};

// Winograd F(2x2, 3x3) for 3 x 3 windows of stride 1 (Lavin and Gray, 2015): 16 multiplications per 2 x 2
// outputs and input channel instead of 36. Three dispatches: the input's 4 x 4 patches transformed
// (winograd_input.comp), sixteen GEMMs of the transformed weights by the transformed patches (the
// implicit GEMM as a 1 x 1 convolution of sixteen groups, fp32), the products transformed back with the
// epilogue (winograd_output.comp). F(2x2) rather than the CPU's F(4x4): its transforms add and halve
// only, so fp32 results stay within 1e-5 of a direct sum. Patches and products live in the stream's
// workspace.
class WinogradConvolution final : public ResidualConvolution {
 public:
  WinogradConvolution(const ConvGeometry& g, const Tensor& weights, Tensor bias, const std::string& owner,
                      StreamContext& context)
      : ResidualConvolution(g, context), bias_(std::move(bias)) {
    const Geometry2d p = planar(g);
    const std::uint32_t tiles_h = (p.out_h + 1) / 2, tiles_w = (p.out_w + 1) / 2;
    tiles_ = g.batch * tiles_h * tiles_w;
    ConvGeometry products{.batch = 1,
                          .in_channels = 16 * g.in_channels,
                          .out_channels = 16 * g.out_channels,
                          .group = 16,
                          .in_size = {1, tiles_},
                          .out_size = {1, tiles_},
                          .kernel = {1, 1},
                          .stride = {1, 1},
                          .pad = {0, 0},
                          .dilation = {1, 1}};
    gemm_ = gemm_params(products);
    weights_ = pack_weights(weights, "winograd", winograd_rows, gemm_, 16, owner, context);
    patch_floats_ = 16 * g.in_channels * tiles_;
    product_floats_ = 16 * g.out_channels * tiles_;
    input_ = {u32(g.in_channels), p.in_h, p.in_w, p.pad_h, p.pad_w, tiles_h, tiles_w, u32(tiles_)};
    output_ = {u32(g.out_channels),      p.out_h, p.out_w, tiles_h, tiles_w, u32(tiles_),
               bias_.defined() ? 1u : 0u};
  }
  // Patches and products go to the stream's workspace, reserved here, or with `own` memory to that
  // (timing, before the kernel is chosen: a kernel not chosen leaves the stream's workspace as it was).
  void use_workspace(const void* own = nullptr) {
    own_workspace_ = own;
    if (own == nullptr) context_.reserve_workspace(workspace_bytes_needed());
  }
  std::size_t workspace_bytes_needed() const {
    return static_cast<std::size_t>(patch_floats_ + product_floats_) * sizeof(float);
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (outputs[0].numel() == 0) return;
    const auto* workspace =
        static_cast<const float*>(own_workspace_ != nullptr ? own_workspace_ : context_.workspace());
    const Buffer patches{workspace, static_cast<std::size_t>(patch_floats_) * sizeof(float)};
    const Buffer products{workspace + patch_floats_,
                          static_cast<std::size_t>(product_floats_) * sizeof(float)};
    context_.dispatch(shader("winograd_input"), {buffer(inputs[0]), patches}, input_,
                      groups(patch_floats_ / 16));
    context_.dispatch("convolution", {patches, buffer(weights_), products, products, products, products},
                      gemm_, groups(tiles_, 64), groups(gemm_.group_out, 64), 16);
    const Buffer out = output(outputs[0]);
    output_.has_residual = residual_.address != nullptr ? 1u : 0u;
    output_.lo = lo_;
    output_.hi = hi_;
    context_.dispatch(shader("winograd_output"),
                      {products, buffer(bias_.defined() ? bias_ : weights_), out, residual(out)}, output_,
                      groups(product_floats_ / 16));
  }
  const char* name() const override { return "vulkan winograd F(2x2,3x3)"; }

  // Winograd's shape: 2-D, one group, 3 x 3 windows, stride and dilation 1; and patches and products each
  // within the device's largest storage buffer (16 values per 2 x 2 tile and channel: 4x the input's and
  // the output's size), which also keeps the shaders' 32-bit indices in range.
  static bool applies(const ConvGeometry& g, std::uint64_t largest_buffer) {
    if (g.axes() != 2 || g.group != 1 || g.kernel != std::vector<std::int64_t>{3, 3} ||
        g.stride != std::vector<std::int64_t>{1, 1} || g.dilation != std::vector<std::int64_t>{1, 1})
      return false;
    const auto tiles =
        static_cast<std::uint64_t>(g.batch * ((g.out_size[0] + 1) / 2) * ((g.out_size[1] + 1) / 2));
    const auto channels = static_cast<std::uint64_t>(std::max(g.in_channels, g.out_channels));
    return 16 * channels * tiles * sizeof(float) <= largest_buffer;
  }

 private:
  Tensor weights_, bias_;
  const void* own_workspace_ = nullptr;
  std::int64_t tiles_ = 0, patch_floats_ = 0, product_floats_ = 0;
  GemmParams gemm_{};
  struct {
    std::uint32_t channels, in_h, in_w;
    std::int32_t pad_h, pad_w;
    std::uint32_t tiles_h, tiles_w, tiles;
  } input_{};
  struct {
    std::uint32_t channels, out_h, out_w, tiles_h, tiles_w, tiles, has_bias, has_residual;
    float lo, hi;
  } output_{};
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

// ESPRESSO_CONV_TACTIC=winograd or gemm (the CPU's names; implicit and im2col, the CUDA backend's GEMMs,
// mean gemm) forces Winograd or the implicit GEMM where both apply, for tests and comparisons; cudnn and the
// CPU's direct leave the choice alone (forced_conv_tactic_name() refuses other names).
std::optional<bool> forced_winograd() {
  const std::string tactic = forced_conv_tactic_name();
  if (tactic == "winograd") return true;
  if (tactic == "gemm" || tactic == "implicit" || tactic == "im2col") return false;
  return std::nullopt;
}

// A 3 x 3 window of stride 1: Winograd or the implicit GEMM, whichever is faster on this device and
// shape, timed once with both kernels made (packed weights; Winograd's patches and products in memory of
// their own, so that the one not chosen leaves no workspace behind) on an input of the layer's shape and
// remembered in memory and on disk (TacticCache "vulkan-convolution-tactics.txt", beside the CPU's and
// cuDNN's choices), as the CPU backend picks its tactics. With fewer than 16 channels on either side,
// Winograd's 16-deep GEMM rounds would be mostly padding: the implicit GEMM, untimed. Where Winograd's
// memory cannot be had, the implicit GEMM too.
std::unique_ptr<Kernel> winograd_or_gemm(const ConvGeometry& g, const Tensor& weights, const Tensor& bias,
                                         const std::string& owner, StreamContext& context) {
  const auto gemm = [&] { return std::make_unique<GemmConvolution>(g, weights, bias, owner, context); };
  // Winograd on the stream's workspace.
  const auto winograd = [&] {
    auto kernel = std::make_unique<WinogradConvolution>(g, weights, bias, owner, context);
    kernel->use_workspace();
    return kernel;
  };
  if (const std::optional<bool> forced = forced_winograd()) {
    if (*forced) return winograd();
    return gemm();
  }
  if (g.in_channels < 16 || g.out_channels < 16) return gemm();
  const PhysicalDevice& device = context.context().physical();
  std::string key = std::string(device.properties.deviceName) + "|" + device.driver + "|" +
                    (context.kernel_dtype() == DType::f16 ? "f16" : "f32") + "|conv3x3s1|n" +
                    std::to_string(g.batch) + "|c" + std::to_string(g.in_channels) + "|k" +
                    std::to_string(g.out_channels) + "|" + std::to_string(g.in_size[0]) + "x" +
                    std::to_string(g.in_size[1]) + "|pad" + std::to_string(g.pad[0]) + "x" +
                    std::to_string(g.pad[1]);
  std::replace(key.begin(), key.end(), ' ', '_');  // keys hold no white space
  TacticCache& cache = tactic_cache("vulkan-convolution-tactics.txt");
  const std::optional<std::string> known = cache.find(key);
  if (known == "gemm") return gemm();
  std::unique_ptr<Kernel> kernels[2];
  std::shared_ptr<void> own_workspace;
  std::vector<Tensor> x(1), y(1);
  // Device memory for Winograd's transforms (and the timing's input and output), or the GEMM, which needs
  // less. Nothing is recorded before the try ends.
  try {
    if (known == "winograd") return winograd();
    const auto memory = [&](std::size_t bytes) {
      return context.context().allocate(bytes, "timing the convolutions of " + owner);
    };
    const auto tensor = [&](const Shape& shape) {
      const DType dtype = context.kernel_dtype();
      std::shared_ptr<void> bytes = memory(static_cast<std::size_t>(shape.numel()) * dtype_size(dtype));
      return Tensor::wrap(bytes.get(), shape, dtype, context.device(), bytes);
    };
    x[0] = tensor(Shape{g.batch, g.in_channels, g.in_size[0], g.in_size[1]});
    y[0] = tensor(g.output_shape());
    auto candidate = std::make_unique<WinogradConvolution>(g, weights, bias, owner, context);
    own_workspace = memory(candidate->workspace_bytes_needed());
    candidate->use_workspace(own_workspace.get());
    kernels[1] = std::move(candidate);
  } catch (const OutOfMemoryError&) {
    return gemm();
  }
  kernels[0] = gemm();
  // The timing's work finishes before its memory goes, also when a step of it throws.
  struct WaitOnExit {
    StreamContext& stream;
    ~WaitOnExit() {
      try {
        stream.synchronize();
      } catch (const Error&) {  // the error that unwinds is the one to report
      }
    }
  } wait{context};
  context.fill(x[0], 0.5f);
  double best[2] = {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity()};
  // One run each to make pipelines and warm caches, then three each, alternating; the best runs decide.
  for (int run = 0; run < 4; ++run) {
    for (int k = 0; k < 2; ++k) {
      const double ms = context.time_ms([&] { kernels[k]->forward(x, y); });
      if (run > 0) best[k] = std::min(best[k], ms);
    }
  }
  const bool faster = best[1] < best[0];
  cache.store(key, faster ? "winograd" : "gemm");
  if (!faster) return std::move(kernels[0]);
  try {
    static_cast<WinogradConvolution&>(*kernels[1]).use_workspace();
  } catch (const OutOfMemoryError&) {
    return std::move(kernels[0]);  // the stream's workspace cannot grow that far
  }
  return std::move(kernels[1]);
}

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
  Tensor bias = conv.has_bias() ? weight(layer, 1, context) : Tensor{};
  if (g.group == g.in_channels && g.group == g.out_channels && g.group > 1) {
    return std::make_unique<DepthwiseConvolution>(g, weight(layer, 0, context), std::move(bias), context);
  }
  // The GEMM's grid is one work group per 64 x 64 tile, not looped over: beyond the device's grid (65,535
  // columns of tiles on many), the CPU runs the layer. Winograd's GEMMs have fewer columns (tiles of 2 x 2).
  const std::uint32_t* most = context.context().physical().properties.limits.maxComputeWorkGroupCount;
  if (groups(g.batch * g.out_spatial(), 64) > most[0] || groups(g.out_channels / g.group, 64) > most[1])
    return nullptr;
  const std::string owner = "layer '" + layer.name() + "'";
  // A binding starts at an aligned offset up to an alignment before its data (StreamContext::dispatch).
  const VkPhysicalDeviceLimits& limits = context.context().physical().properties.limits;
  if (WinogradConvolution::applies(
          g, limits.maxStorageBufferRange / 4 * 4 - limits.minStorageBufferOffsetAlignment))
    return winograd_or_gemm(g, layer.weights()[0], bias, owner, context);
  return std::make_unique<GemmConvolution>(g, layer.weights()[0], std::move(bias), owner, context);
}

}  // namespace espresso::vulkan
