// MatMul on the GPU through cuBLAS (full fp32, see StreamContext::cublas): one strided-batched
// SGEMM over the last batch axis per position of the other batch axes, or a single SGEMM when the
// second operand is one matrix shared by every batch (the batch then folds into the rows).
#include "layers/matmul.h"

#include <limits>

#include "backends/cuda/kernels.h"

namespace espresso::cuda {
namespace {

class MatMulKernel final : public Kernel {
 public:
  MatMulKernel(MatMulLayer::Plan plan, StreamContext& context)
      : plan_(std::move(plan)), context_(context), cublas_(context.cublas()) {
    bool b_shared = true, a_contiguous = true;
    std::int64_t expected = 1;
    for (std::size_t d = plan_.batch.size(); d-- > 0;) {
      b_shared = b_shared && plan_.b_strides[d] == 0;
      a_contiguous = a_contiguous && (plan_.batch[d] == 1 || plan_.a_strides[d] == expected);
      expected *= plan_.batch[d];
    }
    batches_ = expected;
    fold_ = b_shared && a_contiguous;
    last_ = plan_.batch.empty() ? 1 : plan_.batch.back();
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* a = inputs[0].data<float>();
    const float* b = inputs[1].data<float>();
    float* y = outputs[0].data<float>();
    const auto m = plan_.m, n = plan_.n, k = plan_.k;
    if (outputs[0].numel() == 0) return;
    if (k == 0) {  // an empty sum; cuBLAS rejects a leading dimension of 0
      ESPRESSO_CUDA_CHECK(cudaMemsetAsync(y, 0, outputs[0].bytes(), context_.stream()));
      return;
    }
    const float one = 1.0f, zero = 0.0f;
    // cuBLAS is column-major: the row-major product y = a · b is the column-major yᵀ = bᵀ · aᵀ.
    if (fold_) {
      ESPRESSO_CUDA_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n),
                                      static_cast<int>(batches_ * m), static_cast<int>(k), &one, b,
                                      static_cast<int>(n), a, static_cast<int>(k), &zero, y,
                                      static_cast<int>(n)));
      return;
    }
    const std::size_t outer_rank = plan_.batch.empty() ? 0 : plan_.batch.size() - 1;
    const long long stride_a = plan_.batch.empty() ? 0 : plan_.a_strides.back() * m * k;
    const long long stride_b = plan_.batch.empty() ? 0 : plan_.b_strides.back() * k * n;
    std::vector<std::int64_t> index(outer_rank, 0);
    for (std::int64_t t = 0, outer = batches_ / last_; t < outer; ++t) {
      std::int64_t ia = 0, ib = 0;
      for (std::size_t d = 0; d < outer_rank; ++d) {
        ia += index[d] * plan_.a_strides[d];
        ib += index[d] * plan_.b_strides[d];
      }
      ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
          &one, b + ib * k * n, static_cast<int>(n), stride_b, a + ia * m * k, static_cast<int>(k), stride_a,
          &zero, y + t * last_ * m * n, static_cast<int>(n), m * n, static_cast<int>(last_)));
      for (std::size_t d = outer_rank; d-- > 0;) {
        if (++index[d] < plan_.batch[d]) break;
        index[d] = 0;
      }
    }
  }
  const char* name() const override { return "cublas"; }

 private:
  MatMulLayer::Plan plan_;
  StreamContext& context_;
  cublasHandle_t cublas_;
  std::int64_t batches_ = 1, last_ = 1;
  bool fold_ = false;
};

bool fits_int(std::int64_t v) { return v <= std::numeric_limits<int>::max(); }

}  // namespace

std::unique_ptr<Kernel> make_matmul(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context) {
  MatMulLayer::Plan plan = static_cast<const MatMulLayer&>(layer).plan(inputs[0], inputs[1]);
  const std::int64_t batches = Shape(plan.batch).numel();
  if (!fits_int(plan.m * batches) || !fits_int(plan.n) || !fits_int(plan.k) || !fits_int(batches))
    return nullptr;
  return std::make_unique<MatMulKernel>(std::move(plan), context);
}

}  // namespace espresso::cuda
