// InnerProduct on Vulkan: one tiled GEMM, y (M x N) = x (M x K) · Wᵀ + b, W stored N x K or, with
// `transpose`, K x N.
#include "backends/vulkan/kernels.h"
#include "layers/inner_product.h"

namespace espresso::vulkan {
namespace {

class InnerProductKernel final : public VulkanKernel {
 public:
  InnerProductKernel(const InnerProductLayer::Dims& d, bool transposed, Tensor weights, Tensor bias,
                     StreamContext& context)
      : VulkanKernel(context), weights_(std::move(weights)), bias_(std::move(bias)) {
    params_ = {u32(d.rows), u32(d.outputs), u32(d.inner), transposed ? 1u : 0u, bias_.defined() ? 1u : 0u};
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (outputs[0].numel() == 0) return;
    context_.dispatch("gemm",
                      {buffer(inputs[0]), buffer(weights_), buffer(bias_.defined() ? bias_ : weights_),
                       buffer(outputs[0])},
                      params_, groups(params_.n, 64), groups(params_.m, 64));
  }
  const char* name() const override { return "vulkan gemm"; }

 private:
  Tensor weights_, bias_;
  struct {
    std::uint32_t m, n, k, b_k_by_n, has_bias;
  } params_{};
};

}  // namespace

std::unique_ptr<Kernel> make_inner_product(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context) {
  const auto& ip = static_cast<const InnerProductLayer&>(layer);
  if (inputs.size() != 1) return nullptr;
  const InnerProductLayer::Dims d = ip.dims(inputs[0]);
  Tensor weights = weight(layer, 0, context);
  Tensor bias = ip.has_bias() ? weight(layer, 1, context) : Tensor{};
  return std::make_unique<InnerProductKernel>(d, ip.transposed(), std::move(weights), std::move(bias), context);
}

}  // namespace espresso::vulkan
