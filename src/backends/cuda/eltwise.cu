// Eltwise on the GPU: the inputs are folded in one at a time, y = combine(y, x_k), in the order
// the reference uses, so sums see the same rounding sequence. Backward works one input at a time
// too, so any number of inputs needs no table of pointers on the device.
#include <cstdint>

#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/eltwise.h"

namespace espresso::cuda {
namespace {

// y = a_coeff · a ⊕ b_coeff · b, the coefficients used only for sums.
__global__ void combine(const float* a, const float* b, float* y, long long n, EltwiseOperation operation,
                        float a_coeff, float b_coeff) {
  for (long long i : grid_stride(n)) {
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

// dx += coeff · dy.
__global__ void add_scaled(const float* dy, float* dx, long long n, float coeff) {
  for (long long i : grid_stride(n)) {
    dx[i] += coeff * dy[i];
  }
}

// out = a · b, or out += a · b when accumulating; out may be a.
__global__ void multiply(const float* a, const float* b, float* out, long long n, bool accumulate) {
  for (long long i : grid_stride(n)) {
    const float product = a[i] * b[i];
    out[i] = accumulate ? out[i] + product : product;
  }
}

// Called for each input in order: the first input equal to the maximum y takes dy there, as in the
// reference, where the first maximum wins ties. `unclaimed` marks the elements no input took yet.
__global__ void claim_maximum(const float* x, const float* y, const float* dy, float* dx,
                              std::int8_t* unclaimed, long long n) {
  for (long long i : grid_stride(n)) {
    if (unclaimed[i] && x[i] == y[i]) {
      unclaimed[i] = 0;
      if (dx != nullptr) dx[i] += dy[i];
    }
  }
}

class EltwiseKernel final : public CudaKernel {
 public:
  EltwiseKernel(EltwiseOperation operation, std::vector<float> coeffs, Tensor scratch, StreamContext& context)
      : CudaKernel(context),
        operation_(operation),
        coeffs_(std::move(coeffs)),
        scratch_(std::move(scratch)) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    float* y = outputs[0].data<float>();
    for (std::size_t k = 1; k < inputs.size(); ++k) {
      const float* a = k == 1 ? inputs[0].data<float>() : y;
      launch(context_, n, combine, a, inputs[k].data<float>(), y, n, operation_, k == 1 ? coeffs_[0] : 1.0f,
             coeffs_[k]);
    }
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t n = outputs[0].numel();
    if (n == 0) return;
    const float* dy = output_grads[0].data<float>();
    switch (operation_) {
      case EltwiseOperation::sum:
        for (std::size_t k = 0; k < inputs.size(); ++k) {
          if (!input_grads[k].defined()) continue;
          launch(context_, n, add_scaled, dy, input_grads[k].data<float>(), n, coeffs_[k]);
        }
        break;
      case EltwiseOperation::prod:
        for (std::size_t k = 0; k < inputs.size(); ++k) {
          if (input_grads[k].defined()) add_product_gradient(inputs, k, dy, input_grads[k].data<float>(), n);
        }
        break;
      case EltwiseOperation::max: {
        auto* unclaimed = scratch_.data<std::int8_t>();
        ESPRESSO_CUDA_CHECK(cudaMemsetAsync(unclaimed, 1, static_cast<std::size_t>(n), context_.stream()));
        for (std::size_t k = 0; k < inputs.size(); ++k) {
          float* dx = input_grads[k].defined() ? input_grads[k].data<float>() : nullptr;
          launch(context_, n, claim_maximum, inputs[k].data<float>(), outputs[0].data<float>(), dy, dx,
                 unclaimed, n);
        }
        break;
      }
    }
  }

 private:
  // dx_k += dy · Π_{j≠k} x_j, multiplied in the reference's order (the product of the others, never
  // y / x_k, which fails at x_k = 0); partial products go through the scratch buffer.
  void add_product_gradient(const std::vector<Tensor>& inputs, std::size_t k, const float* dy, float* dx,
                            std::int64_t n) {
    const std::size_t last = k + 1 == inputs.size() ? k - 1 : inputs.size() - 1;
    const float* partial = dy;
    for (std::size_t j = 0; j < inputs.size(); ++j) {
      if (j == k) continue;
      float* target = j == last ? dx : scratch_.data<float>();
      launch(context_, n, multiply, partial, inputs[j].data<float>(), target, n, j == last);
      partial = target;
    }
  }

  EltwiseOperation operation_;
  std::vector<float> coeffs_;
  // Backward's working memory, made with the kernel: partial products (f32) for products of three or
  // more inputs, the unclaimed flags (i8) for maxima; undefined otherwise.
  Tensor scratch_;
};

}  // namespace

std::unique_ptr<Kernel> make_eltwise(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context) {
  const auto& eltwise = static_cast<const EltwiseLayer&>(layer);
  Tensor scratch;
  if (eltwise.operation() == EltwiseOperation::max) {
    scratch = Tensor::empty(inputs[0], DType::i8, context.device());
  } else if (eltwise.operation() == EltwiseOperation::prod && inputs.size() > 2) {
    scratch = Tensor::empty(inputs[0], DType::f32, context.device());
  }
  return std::make_unique<EltwiseKernel>(eltwise.operation(), eltwise.coefficients(inputs.size()),
                                         std::move(scratch), context);
}

}  // namespace espresso::cuda
