// InnerProduct on the GPU: one cuBLAS SGEMM (full fp32, see StreamContext::cublas) and the bias.
#include "layers/inner_product.h"

#include <limits>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/kernels.h"

namespace espresso::cuda {
namespace {

class InnerProductKernel final : public Kernel {
 public:
  InnerProductKernel(const InnerProductLayer& layer, const InnerProductLayer::Dims& dims,
                     StreamContext& context)
      : dims_(dims),
        transposed_(layer.transposed()),
        context_(context),
        cublas_(context.cublas()),
        weights_(context.device_weights(layer.weights()[0], "layer '" + layer.name() + "'").data<float>()),
        bias_(layer.has_bias()
                  ? context.device_weights(layer.weights()[1], "layer '" + layer.name() + "'").data<float>()
                  : nullptr) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const auto m = static_cast<int>(dims_.rows);
    const auto k = static_cast<int>(dims_.inner);
    const auto n = static_cast<int>(dims_.outputs);
    float* y = outputs[0].data<float>();
    const float one = 1.0f, zero = 0.0f;
    // cuBLAS is column-major: the row-major M x N product y = x · Wᵀ is the column-major N x M
    // product yᵀ = W · xᵀ, where x's rows are xᵀ's columns as stored.
    ESPRESSO_CUDA_CHECK(cublasSgemm(cublas_, transposed_ ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, n, m, k,
                                    &one, weights_, transposed_ ? n : k, inputs[0].data<float>(), k, &zero, y,
                                    n));
    if (bias_ != nullptr) channel_affine(context_, y, nullptr, bias_, y, {dims_.rows, dims_.outputs, 1});
  }
  const char* name() const override { return "cublas"; }

 private:
  InnerProductLayer::Dims dims_;
  bool transposed_;
  StreamContext& context_;
  cublasHandle_t cublas_;
  const float* weights_;
  const float* bias_;
};

bool fits_int(std::int64_t v) { return v <= std::numeric_limits<int>::max(); }

}  // namespace

std::unique_ptr<Kernel> make_inner_product(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context) {
  const auto& ip = static_cast<const InnerProductLayer&>(layer);
  const InnerProductLayer::Dims dims = ip.dims(inputs[0]);
  if (!fits_int(dims.rows) || !fits_int(dims.inner) || !fits_int(dims.outputs)) return nullptr;
  return std::make_unique<InnerProductKernel>(ip, dims, context);
}

}  // namespace espresso::cuda
