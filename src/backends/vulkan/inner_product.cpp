// InnerProduct and MatMul on Vulkan: one tiled GEMM, y (M x N) = x (M x K) · Wᵀ + b, W stored N x K or,
// with `transpose`, K x N; MatMul runs it over its broadcast batch of matrices.
#include "backends/vulkan/kernels.h"
#include "layers/inner_product.h"
#include "layers/matmul.h"

namespace espresso::vulkan {
namespace {

class InnerProductKernel final : public VulkanKernel {
 public:
  InnerProductKernel(const InnerProductLayer::Dims& d, bool transposed, Tensor weights, Tensor bias,
                     StreamContext& context)
      : VulkanKernel(context), weights_(std::move(weights)), bias_(std::move(bias)) {
    params_ = {u32(d.rows), u32(d.outputs), u32(d.inner), transposed ? 1u : 0u, bias_.defined() ? 1u : 0u, 0u, {}, {}, {}};
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (outputs[0].numel() == 0) return;
    const std::vector<Buffer> buffers{buffer(inputs[0]), buffer(weights_),
                                      buffer(bias_.defined() ? bias_ : weights_), buffer(outputs[0])};
    if (few_rows()) {
      const struct {
        std::uint32_t m, n, k, b_k_by_n, has_bias;
      } gemv{params_.m, params_.n, params_.k, params_.b_k_by_n, params_.has_bias};
      context_.dispatch(shader("gemv"), buffers, gemv, params_.n);
      return;
    }
    context_.dispatch(shader("gemm"), buffers, params_, groups(params_.n, 64), groups(params_.m, 64));
  }
  const char* name() const override { return few_rows() ? "vulkan gemv" : "vulkan gemm"; }

 private:
  // Up to 4 rows (batch 1 to 4): one work group per output, the sum along k spread over its invocations.
  bool few_rows() const { return params_.m <= 4; }

  Tensor weights_, bias_;
  struct {
    std::uint32_t m, n, k, b_k_by_n, has_bias, batch_rank;
    std::uint32_t batch[4], a_stride[4], b_stride[4];
  } params_{};
};

class MatMulKernel final : public VulkanKernel {
 public:
  MatMulKernel(const MatMulLayer::Plan& plan, StreamContext& context) : VulkanKernel(context) {
    params_ = {u32(plan.m), u32(plan.n), u32(plan.k), 1u, 0u, u32(static_cast<std::int64_t>(plan.batch.size())), {}, {}, {}};
    batches_ = 1;
    for (std::size_t d = 0; d < plan.batch.size(); ++d) {
      params_.batch[d] = u32(plan.batch[d]);
      params_.a_stride[d] = u32(plan.a_strides[d]);
      params_.b_stride[d] = u32(plan.b_strides[d]);
      batches_ *= plan.batch[d];
    }
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (outputs[0].numel() == 0) return;
    if (params_.k == 0) {
      // An empty sum: zeros.
      struct {
        std::uint32_t n;
        float value;
      } fill{u32(outputs[0].numel()), 0.0f};
      context_.dispatch("fill", {buffer(outputs[0])}, fill, groups(outputs[0].numel()));
      return;
    }
    context_.dispatch("gemm", {buffer(inputs[0]), buffer(inputs[1]), buffer(inputs[0]), buffer(outputs[0])}, params_,
                      groups(params_.n, 64), groups(params_.m, 64), u32(batches_));
  }
  const char* name() const override { return "vulkan gemm"; }

 private:
  struct {
    std::uint32_t m, n, k, b_k_by_n, has_bias, batch_rank;
    std::uint32_t batch[4], a_stride[4], b_stride[4];
  } params_{};
  std::int64_t batches_ = 1;
};

}  // namespace

std::unique_ptr<Kernel> make_matmul(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  const MatMulLayer::Plan plan = static_cast<const MatMulLayer&>(layer).plan(inputs[0], inputs[1]);
  if (plan.batch.size() > 4 || Shape(plan.batch).numel() > 65535) return nullptr;
  return std::make_unique<MatMulKernel>(plan, context);
}

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
