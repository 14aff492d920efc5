// The normalisations on Vulkan: Softmax, LogSoftmax, LRN and SSD's Normalize.
#include "layers/softmax.h"

#include "backends/vulkan/kernels.h"
#include "layers/log_softmax.h"
#include "layers/lrn.h"
#include "layers/normalize.h"

namespace espresso::vulkan {
namespace {

class SoftmaxKernel final : public VulkanKernel {
 public:
  SoftmaxKernel(const AxisSplit& split, bool log_output, StreamContext& context)
      : VulkanKernel(context), split_(split), log_(log_output ? 1u : 0u) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (inputs[0].numel() == 0) return;
    const std::vector<Buffer> buffers{buffer(inputs[0]), buffer(outputs[0])};
    if (split_.inner == 1 && split_.channels >= 256) {
      // Long rows (classifiers): a work group per row.
      struct {
        std::uint32_t rows, channels, log_output;
      } params{u32(split_.outer), u32(split_.channels), log_};
      context_.dispatch(shader("softmax_rows"), buffers, params,
                        u32(std::min<std::int64_t>(split_.outer, 65535)));
      return;
    }
    struct {
      std::uint32_t outer, channels, inner, log_output;
    } params{u32(split_.outer), u32(split_.channels), u32(split_.inner), log_};
    context_.dispatch("softmax", buffers, params, groups(split_.outer * split_.inner));
  }

 private:
  AxisSplit split_;
  std::uint32_t log_;
};

class LRNKernel final : public VulkanKernel {
 public:
  LRNKernel(const LRNLayer& layer, const Shape& shape, StreamContext& context) : VulkanKernel(context) {
    const bool across = layer.across_channels();
    const float base = across ? layer.k() : 1.0f;
    const float norm = layer.alpha() / static_cast<float>(across ? layer.size() : layer.size() * layer.size());
    params_ = {u32(shape.numel()), u32(shape[1]), u32(shape[2]), u32(shape[3]), u32(layer.size()),
               u32(layer.before()), across ? 1u : 0u, base, norm, layer.beta()};
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (params_.n == 0) return;
    context_.dispatch("lrn", {buffer(inputs[0]), buffer(outputs[0])}, params_, groups(params_.n));
  }

 private:
  struct {
    std::uint32_t n, channels, height, width, size, before, across;
    float base, norm, beta;
  } params_{};
};

class NormalizeKernel final : public VulkanKernel {
 public:
  NormalizeKernel(const NormalizeExtent& e, float eps, Tensor scale, StreamContext& context)
      : VulkanKernel(context), scale_(std::move(scale)) {
    params_ = {u32(e.samples),
               u32(e.channels),
               u32(e.spatial),
               e.across_spatial ? 1u : 0u,
               e.channel_shared ? 1u : 0u,
               eps};
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (inputs[0].numel() == 0) return;
    const std::uint32_t work_groups = params_.across_spatial != 0u
                                          ? std::min<std::uint32_t>(params_.samples, 65535)
                                          : groups(std::int64_t{params_.samples} * params_.spatial);
    context_.dispatch(shader("normalize"), {buffer(inputs[0]), buffer(scale_), buffer(outputs[0])}, params_,
                      work_groups);
  }

 private:
  Tensor scale_;
  struct {
    std::uint32_t samples, channels, spatial, across_spatial, channel_shared;
    float eps;
  } params_{};
};

}  // namespace

std::unique_ptr<Kernel> make_softmax(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  return std::make_unique<SoftmaxKernel>(static_cast<const SoftmaxLayer&>(layer).split(inputs[0]), false, context);
}

std::unique_ptr<Kernel> make_log_softmax(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  layer.output_shapes(inputs);  // validates the axis
  const Shape& shape = inputs[0];
  const int axis = shape.canonical_axis(static_cast<const LogSoftmaxLayer&>(layer).axis());
  return std::make_unique<SoftmaxKernel>(AxisSplit{shape.count(0, axis), shape[axis], shape.count(axis + 1)}, true,
                                         context);
}

std::unique_ptr<Kernel> make_lrn(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  if (inputs[0].rank() != 4) return nullptr;
  return std::make_unique<LRNKernel>(static_cast<const LRNLayer&>(layer), inputs[0], context);
}

std::unique_ptr<Kernel> make_normalize(const Layer& layer, const std::vector<Shape>& inputs,
                                       StreamContext& context) {
  const auto& normalize = static_cast<const NormalizeLayer&>(layer);
  return std::make_unique<NormalizeKernel>(normalize.extent(inputs[0]), normalize.eps(),
                                           weight(layer, 0, context), context);
}

}  // namespace espresso::vulkan
