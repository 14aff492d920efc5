// Max and average pooling on Vulkan over 1 or 2 spatial axes, one invocation per output element.
#include "backends/vulkan/kernels.h"
#include "layers/pooling.h"

namespace espresso::vulkan {
namespace {

class PoolingKernel final : public VulkanKernel {
 public:
  PoolingKernel(const PoolingLayer& layer, const PoolGeometry& g, StreamContext& context) : VulkanKernel(context) {
    const bool two = g.axes() == 2;
    auto at = [&](const std::vector<std::int64_t>& v, int axis, std::int64_t one) {
      return u32(two ? v[static_cast<std::size_t>(axis)] : (axis == 0 ? one : v[0]));
    };
    n_ = g.batch * g.channels * (two ? g.out_size[0] * g.out_size[1] : g.out_size[0]);
    params_ = {u32(n_),
               at(g.in_size, 0, 1),
               at(g.in_size, 1, 1),
               at(g.out_size, 0, 1),
               at(g.out_size, 1, 1),
               at(g.kernel, 0, 1),
               at(g.kernel, 1, 1),
               at(g.stride, 0, 1),
               at(g.stride, 1, 1),
               at(g.pad, 0, 0),
               at(g.pad, 1, 0),
               layer.method() == PoolMethod::average ? 1u : 0u,
               layer.count_include_pad() ? 1u : 0u};
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (n_ == 0) return;
    context_.dispatch(shader("pooling"), {buffer(inputs[0]), buffer(outputs[0])}, params_, groups(n_));
  }

 private:
  std::int64_t n_ = 0;
  struct {
    std::uint32_t n, in_h, in_w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, average,
        include_pad;
  } params_{};
};

}  // namespace

std::unique_ptr<Kernel> make_pooling(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  const auto& pool = static_cast<const PoolingLayer&>(layer);
  // A second output (max indices) stays on the CPU.
  if (inputs.size() != 1 || layer.spec().outputs.size() != 1) return nullptr;
  const PoolGeometry g = pool.geometry(inputs[0]);
  if (g.axes() < 1 || g.axes() > 2) return nullptr;
  return std::make_unique<PoolingKernel>(pool, g, context);
}

}  // namespace espresso::vulkan
