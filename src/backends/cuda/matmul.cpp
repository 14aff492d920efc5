// MatMul on the GPU through cuBLAS (full fp32, see StreamContext::cublas): one strided-batched
// SGEMM over the last batch axis per position of the other batch axes, or a single SGEMM when the
// second operand is one matrix shared by every batch (the batch then folds into the rows).
// Backward adds da = dy · bᵀ and db = aᵀ · dy the same way (beta 1). The batches of one cuBLAS call
// run concurrently, so an operand broadcast over the last batch axis gathers its gradient one batch
// per call: calls on one stream run in turn.
#include "layers/matmul.h"

#include <cstddef>
#include <limits>

#include "backends/cuda/kernels.h"

namespace espresso::cuda {
namespace {

// `dtype`: the storage type of a, b and y; f16 and bf16 (inference, no backward) go through cublasGemmEx
// on tensor cores with fp32 compute, the same products as the fp32 SGEMMs.
class MatMulKernel final : public CudaKernel {
 public:
  MatMulKernel(MatMulLayer::Plan plan, DType dtype, StreamContext& context)
      : CudaKernel(context), plan_(std::move(plan)), dtype_(dtype), cublas_(context.cublas()) {
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

  bool has_fast_backward() const override { return dtype_ == DType::f32; }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (dtype_ != DType::f32) {
      forward_low(inputs, outputs);
      return;
    }
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
    each_outer([&](std::int64_t t0, std::int64_t ia, std::int64_t ib) {
      ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
          &one, b + ib * k * n, static_cast<int>(n), last_stride_b() * k * n, a + ia * m * k,
          static_cast<int>(k), last_stride_a() * m * k, &zero, y + t0 * m * n, static_cast<int>(n), m * n,
          static_cast<int>(last_)));
    });
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const auto m = plan_.m, n = plan_.n, k = plan_.k;
    // With an empty dimension every gradient is empty or receives nothing; cuBLAS rejects a
    // leading dimension of 0.
    if (m == 0 || n == 0 || k == 0 || batches_ == 0) return;
    const float* a = inputs[0].data<float>();
    const float* b = inputs[1].data<float>();
    const float* dy = output_grads[0].data<float>();
    float* da = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
    float* db = input_grads[1].defined() ? input_grads[1].data<float>() : nullptr;
    const float one = 1.0f;
    // Column-major, as in forward: daᵀ = b · dyᵀ and dbᵀ = dyᵀ · a.
    if (fold_) {
      if (da) {
        ESPRESSO_CUDA_CHECK(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(k),
                                        static_cast<int>(batches_ * m), static_cast<int>(n), &one, b,
                                        static_cast<int>(n), dy, static_cast<int>(n), &one, da,
                                        static_cast<int>(k)));
      }
      if (db) {
        ESPRESSO_CUDA_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(n),
                                        static_cast<int>(k), static_cast<int>(batches_ * m), &one, dy,
                                        static_cast<int>(n), a, static_cast<int>(k), &one, db,
                                        static_cast<int>(n)));
      }
      return;
    }
    const long long sa = last_stride_a(), sb = last_stride_b();
    each_outer([&](std::int64_t t0, std::int64_t ia, std::int64_t ib) {
      if (da) {
        over_last_axis(sa == 0, [&](std::int64_t l, std::int64_t count) {
          ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
              cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(k), static_cast<int>(m),
              static_cast<int>(n), &one, b + (ib + l * sb) * k * n, static_cast<int>(n), sb * k * n,
              dy + (t0 + l) * m * n, static_cast<int>(n), m * n, &one, da + (ia + l * sa) * m * k,
              static_cast<int>(k), sa * m * k, static_cast<int>(count)));
        });
      }
      if (db) {
        over_last_axis(sb == 0, [&](std::int64_t l, std::int64_t count) {
          ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
              cublas_, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(n), static_cast<int>(k),
              static_cast<int>(m), &one, dy + (t0 + l) * m * n, static_cast<int>(n), m * n,
              a + (ia + l * sa) * m * k, static_cast<int>(k), sa * m * k, &one, db + (ib + l * sb) * k * n,
              static_cast<int>(n), sb * k * n, static_cast<int>(count)));
        });
      }
    });
  }

  const char* name() const override { return dtype_ == DType::f32 ? "cublas" : "cublas-gemmex"; }

 private:
  // forward() in f16 or bf16: byte offsets of two-byte elements, otherwise as the fp32 path.
  void forward_low(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) {
    const auto* a = static_cast<const std::byte*>(inputs[0].raw());
    const auto* b = static_cast<const std::byte*>(inputs[1].raw());
    auto* y = static_cast<std::byte*>(outputs[0].raw());
    const auto m = plan_.m, n = plan_.n, k = plan_.k;
    if (outputs[0].numel() == 0) return;
    if (k == 0) {
      ESPRESSO_CUDA_CHECK(cudaMemsetAsync(y, 0, outputs[0].bytes(), context_.stream()));
      return;
    }
    const cudaDataType_t type = cublas_type(dtype_);
    const auto e = static_cast<std::int64_t>(dtype_size(dtype_));
    const float one = 1.0f, zero = 0.0f;
    // The handle may be in TF32 math (Precision::tf32); fp16/bf16 tensor cores are these calls'.
    cublasMath_t mode;
    ESPRESSO_CUDA_CHECK(cublasGetMathMode(cublas_, &mode));
    ESPRESSO_CUDA_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
    if (fold_) {
      status =
          cublasGemmEx(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(batches_ * m),
                       static_cast<int>(k), &one, b, type, static_cast<int>(n), a, type, static_cast<int>(k),
                       &zero, y, type, static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    } else {
      each_outer([&](std::int64_t t0, std::int64_t ia, std::int64_t ib) {
        if (status != CUBLAS_STATUS_SUCCESS) return;
        status = cublasGemmStridedBatchedEx(
            cublas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
            &one, b + ib * k * n * e, type, static_cast<int>(n), last_stride_b() * k * n, a + ia * m * k * e,
            type, static_cast<int>(k), last_stride_a() * m * k, &zero, y + t0 * m * n * e, type,
            static_cast<int>(n), m * n, static_cast<int>(last_), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      });
    }
    ESPRESSO_CUDA_CHECK(cublasSetMathMode(cublas_, mode));
    ESPRESSO_CUDA_CHECK(status);
  }

  // Matrices between consecutive batches of the last batch axis (0: broadcast over it).
  long long last_stride_a() const { return plan_.batch.empty() ? 0 : plan_.a_strides.back(); }
  long long last_stride_b() const { return plan_.batch.empty() ? 0 : plan_.b_strides.back(); }

  // Calls visit(t0, ia, ib) per position of the batch axes before the last one: t0 is the first
  // output batch there, ia and ib the matrices of a and b it multiplies.
  template <class Visit>
  void each_outer(Visit&& visit) const {
    const std::size_t outer_rank = plan_.batch.empty() ? 0 : plan_.batch.size() - 1;
    std::vector<std::int64_t> index(outer_rank, 0);
    for (std::int64_t t = 0, outer = batches_ / last_; t < outer; ++t) {
      std::int64_t ia = 0, ib = 0;
      for (std::size_t d = 0; d < outer_rank; ++d) {
        ia += index[d] * plan_.a_strides[d];
        ib += index[d] * plan_.b_strides[d];
      }
      visit(t * last_, ia, ib);
      for (std::size_t d = outer_rank; d-- > 0;) {
        if (++index[d] < plan_.batch[d]) break;
        index[d] = 0;
      }
    }
  }

  // Runs issue(first, count) over the batches [first, first + count) of the last batch axis: all in
  // one call, or one by one when the gradient they add to is `shared` by all of them.
  template <class Issue>
  void over_last_axis(bool shared, Issue&& issue) const {
    if (!shared || last_ == 1) {
      issue(0, last_);
      return;
    }
    for (std::int64_t l = 0; l < last_; ++l) issue(l, 1);
  }

  MatMulLayer::Plan plan_;
  DType dtype_;
  cublasHandle_t cublas_;
  std::int64_t batches_ = 1, last_ = 1;
  bool fold_ = false;
};

bool fits_int(std::int64_t v) { return v <= std::numeric_limits<int>::max(); }

std::unique_ptr<Kernel> matmul_kernel(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                      StreamContext& context) {
  MatMulLayer::Plan plan = static_cast<const MatMulLayer&>(layer).plan(inputs[0], inputs[1]);
  const std::int64_t batches = Shape(plan.batch).numel();
  if (!fits_int(plan.m * batches) || !fits_int(plan.n) || !fits_int(plan.k) || !fits_int(batches))
    return nullptr;
  return std::make_unique<MatMulKernel>(std::move(plan), dtype, context);
}

}  // namespace

std::unique_ptr<Kernel> make_matmul(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context) {
  return matmul_kernel(layer, inputs, DType::f32, context);
}

std::unique_ptr<Kernel> make_lowp_matmul(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                         StreamContext& context) {
  return matmul_kernel(layer, inputs, dtype, context);
}

}  // namespace espresso::cuda
