// InnerProduct on the GPU: one cuBLAS SGEMM (full fp32, see StreamContext::cublas) and the bias;
// backward, two more SGEMMs and the bias gradient's column sums.
#include "layers/inner_product.h"

#include <limits>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/channel_sum.h"
#include "backends/cuda/kernels.h"

namespace espresso::cuda {
namespace {

// cuBLAS is column-major: a row-major R x C matrix is, as stored, the column-major C x R matrix
// that is its transpose. Below, x is M x K, y and dy M x N, and W N x K (K x N when transposed), all
// row-major; so cuBLAS sees xᵀ, yᵀ, dyᵀ and Wᵀ (W).
class InnerProductKernel final : public CudaKernel {
 public:
  InnerProductKernel(const InnerProductLayer& layer, const InnerProductLayer::Dims& dims,
                     StreamContext& context)
      : CudaKernel(context),
        dims_(dims),
        transposed_(layer.transposed()),
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
    // yᵀ (N x M) = W (N x K) · xᵀ (K x M).
    ESPRESSO_CUDA_CHECK(cublasSgemm(cublas_, transposed_ ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, n, m, k,
                                    &one, weights_, transposed_ ? n : k, inputs[0].data<float>(), k, &zero, y,
                                    n));
    if (bias_ != nullptr) channel_affine(context_, y, nullptr, bias_, y, {dims_.rows, dims_.outputs, 1});
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    const auto m = static_cast<int>(dims_.rows);
    const auto k = static_cast<int>(dims_.inner);
    const auto n = static_cast<int>(dims_.outputs);
    const float* x = inputs[0].data<float>();
    const float* dy = output_grads[0].data<float>();
    const float one = 1.0f;
    if (input_grads[0].defined()) {
      // dx = dy · W: dxᵀ (K x M) += Wᵀ (K x N) · dyᵀ (N x M).
      ESPRESSO_CUDA_CHECK(cublasSgemm(cublas_, transposed_ ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, k, m, n,
                                      &one, weights_, transposed_ ? n : k, dy, n, &one,
                                      input_grads[0].data<float>(), k));
    }
    if (weight_grads[0].defined()) {
      float* dw = weight_grads[0].data<float>();
      if (transposed_) {
        // dW (K x N) = xᵀ · dy: dWᵀ (N x K) += dyᵀ (N x M) · x (M x K).
        ESPRESSO_CUDA_CHECK(
            cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, n, k, m, &one, dy, n, x, k, &one, dw, n));
      } else {
        // dW (N x K) = dyᵀ · x: dWᵀ (K x N) += xᵀ (K x M) · dy (M x N).
        ESPRESSO_CUDA_CHECK(
            cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, k, n, m, &one, x, k, dy, n, &one, dw, k));
      }
    }
    if (bias_ != nullptr && weight_grads[1].defined()) {
      add_channel_sums(context_, dy, weight_grads[1].data<float>(), {dims_.rows, dims_.outputs, 1});
    }
  }

  const char* name() const override { return "cublas"; }

 private:
  InnerProductLayer::Dims dims_;
  bool transposed_;
  cublasHandle_t cublas_;
  const float* weights_;
  const float* bias_;
};

bool fits_int(std::int64_t v) { return v <= std::numeric_limits<int>::max(); }

// fp16 / bf16: one cublasGemmEx on tensor cores with fp32 accumulation (the same product as the fp32
// kernel's), the weights a converted copy (a training net refreshes it from the fp32 master weights)
// and the bias kept fp32. Backward: dx in the storage type from the same copy; the weight and bias
// gradients are fp32, accumulated there by cuBLAS and add_channel_sums.
class LowpInnerProductKernel final : public CudaKernel {
 public:
  LowpInnerProductKernel(const InnerProductLayer& layer, const InnerProductLayer::Dims& dims, DType dtype,
                         StreamContext& context)
      : CudaKernel(context),
        dims_(dims),
        transposed_(layer.transposed()),
        dtype_(dtype),
        cublas_(context.cublas()),
        weights_(context.device_weights_as(layer.weights()[0], dtype, "layer '" + layer.name() + "'").raw()),
        bias_(layer.has_bias()
                  ? context.device_weights(layer.weights()[1], "layer '" + layer.name() + "'").data<float>()
                  : nullptr) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const auto m = static_cast<int>(dims_.rows);
    const auto k = static_cast<int>(dims_.inner);
    const auto n = static_cast<int>(dims_.outputs);
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t type = cublas_type(dtype_);
    in_default_math(cublas_, [&] {
      // yᵀ (N x M) = W (N x K) · xᵀ (K x M), as in the fp32 kernel.
      return cublasGemmEx(cublas_, transposed_ ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one,
                          weights_, type, transposed_ ? n : k, inputs[0].raw(), type, k, &zero,
                          outputs[0].raw(), type, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    });
    if (bias_ != nullptr)
      channel_affine(context_, dtype_, outputs[0].raw(), nullptr, bias_, outputs[0].raw(),
                     {dims_.rows, dims_.outputs, 1});
  }

  // The fp32 kernel's three products, with the operands in the storage type.
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    const auto m = static_cast<int>(dims_.rows);
    const auto k = static_cast<int>(dims_.inner);
    const auto n = static_cast<int>(dims_.outputs);
    const void* x = inputs[0].raw();
    const void* dy = output_grads[0].raw();
    const float one = 1.0f;
    const cudaDataType_t type = cublas_type(dtype_);
    in_default_math(cublas_, [&] {
      if (input_grads[0].defined()) {
        // dxᵀ (K x M) += Wᵀ (K x N) · dyᵀ (N x M).
        const cublasStatus_t status =
            cublasGemmEx(cublas_, transposed_ ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, k, m, n, &one,
                         weights_, type, transposed_ ? n : k, dy, type, n, &one, input_grads[0].raw(), type,
                         k, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (status != CUBLAS_STATUS_SUCCESS) return status;
      }
      if (!weight_grads[0].defined()) return CUBLAS_STATUS_SUCCESS;
      float* dw = weight_grads[0].data<float>();
      // dWᵀ (N x K) += dyᵀ (N x M) · x (M x K) when transposed, else dWᵀ (K x N) += xᵀ (K x M) · dy (M x N).
      return transposed_
                 ? cublasGemmEx(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, n, k, m, &one, dy, type, n, x, type, k,
                                &one, dw, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
                 : cublasGemmEx(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, k, n, m, &one, x, type, k, dy, type, n,
                                &one, dw, CUDA_R_32F, k, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    });
    if (bias_ != nullptr && weight_grads[1].defined()) {
      add_channel_sums(context_, dtype_, dy, weight_grads[1].data<float>(), {dims_.rows, dims_.outputs, 1});
    }
  }

  const char* name() const override { return "cublas-gemmex"; }

 private:
  InnerProductLayer::Dims dims_;
  bool transposed_;
  DType dtype_;
  cublasHandle_t cublas_;
  const void* weights_;
  const float* bias_;
};

}  // namespace

std::unique_ptr<Kernel> make_lowp_inner_product(const Layer& layer, const std::vector<Shape>& inputs,
                                                DType dtype, StreamContext& context) {
  const auto& ip = static_cast<const InnerProductLayer&>(layer);
  const InnerProductLayer::Dims dims = ip.dims(inputs[0]);
  if (!fits_int(dims.rows) || !fits_int(dims.inner) || !fits_int(dims.outputs)) return nullptr;
  return std::make_unique<LowpInnerProductKernel>(ip, dims, dtype, context);
}

std::unique_ptr<Kernel> make_inner_product(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context) {
  const auto& ip = static_cast<const InnerProductLayer&>(layer);
  const InnerProductLayer::Dims dims = ip.dims(inputs[0]);
  if (!fits_int(dims.rows) || !fits_int(dims.inner) || !fits_int(dims.outputs)) return nullptr;
  return std::make_unique<InnerProductKernel>(ip, dims, context);
}

}  // namespace espresso::cuda
