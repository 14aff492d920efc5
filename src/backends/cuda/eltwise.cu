// Eltwise on the GPU: the inputs are folded in one at a time, y = combine(y, x_k), in the order
// the reference uses, so sums see the same rounding sequence.
#include "backends/cuda/kernels.h"
#include "layers/eltwise.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;

// y = a_coeff · a ⊕ b_coeff · b, the coefficients used only for sums.
__global__ void combine(const float* a, const float* b, float* y, long long n, EltwiseOperation operation,
                        float a_coeff, float b_coeff) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    switch (operation) {
      case EltwiseOperation::sum:
        y[i] = a_coeff * a[i] + b_coeff * b[i];
        break;
      case EltwiseOperation::prod:
        y[i] = a[i] * b[i];
        break;
      case EltwiseOperation::max:
        y[i] = fmaxf(a[i], b[i]);
        break;
    }
  }
}

class EltwiseKernel final : public Kernel {
 public:
  EltwiseKernel(EltwiseOperation operation, std::vector<float> coeffs, StreamContext& context)
      : operation_(operation), coeffs_(std::move(coeffs)), context_(context) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    float* y = outputs[0].data<float>();
    const unsigned blocks = elementwise_blocks(context_, n, kThreads);
    for (std::size_t k = 1; k < inputs.size(); ++k) {
      const float* a = k == 1 ? inputs[0].data<float>() : y;
      combine<<<blocks, kThreads, 0, context_.stream()>>>(a, inputs[k].data<float>(), y, n, operation_,
                                                          k == 1 ? coeffs_[0] : 1.0f, coeffs_[k]);
      ESPRESSO_CUDA_CHECK(cudaGetLastError());
    }
  }
  const char* name() const override { return "cuda"; }

 private:
  EltwiseOperation operation_;
  std::vector<float> coeffs_;
  StreamContext& context_;
};

}  // namespace

std::unique_ptr<Kernel> make_eltwise(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context) {
  const auto& eltwise = static_cast<const EltwiseLayer&>(layer);
  return std::make_unique<EltwiseKernel>(eltwise.operation(), eltwise.coefficients(inputs.size()), context);
}

}  // namespace espresso::cuda
