// MatMul on the CPU: one sgemm per broadcast batch of matrices, spread over the threads, or a
// single sgemm when the second operand is one matrix shared by every batch (the batch then folds
// into the rows). Backward is two sgemms per batch, run in turn since broadcast operands gather
// the gradients of several batches, or two in all when the batch folds.
#include "layers/matmul.h"

#include <algorithm>
#include <utility>

#include "backends/cpu/blas.h"
#include "backends/cpu/cpu_backend.h"

namespace espresso::cpu {
namespace {

class MatMulKernel final : public Kernel {
 public:
  explicit MatMulKernel(MatMulLayer::Plan plan) : plan_(std::move(plan)) {
    bool b_shared = true, a_contiguous = true;
    std::int64_t expected = 1;
    for (std::size_t d = plan_.batch.size(); d-- > 0;) {
      b_shared = b_shared && plan_.b_strides[d] == 0;
      a_contiguous = a_contiguous && (plan_.batch[d] == 1 || plan_.a_strides[d] == expected);
      expected *= plan_.batch[d];
    }
    batches_ = expected;
    fold_ = b_shared && a_contiguous;
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* a = inputs[0].data<float>();
    const float* b = inputs[1].data<float>();
    float* y = outputs[0].data<float>();
    const std::int64_t m = plan_.m, n = plan_.n, k = plan_.k;
    if (outputs[0].numel() == 0) return;
    if (k == 0) {  // an empty sum; BLAS rejects a leading dimension of 0
      std::fill(y, y + outputs[0].numel(), 0.0f);
      return;
    }
    if (fold_) {
      sgemm(false, false, batches_ * m, n, k, 1.0f, a, k, b, n, 0.0f, y, n);
      return;
    }
    ImageSchedule(batches_).run([&](std::int64_t t, int) {
      const auto [ia, ib] = operands(t);
      sgemm(false, false, m, n, k, 1.0f, a + ia * m * k, k, b + ib * k * n, n, 0.0f, y + t * m * n, n);
    });
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const std::int64_t m = plan_.m, n = plan_.n, k = plan_.k;
    // With an empty dimension every gradient is empty or receives nothing; BLAS rejects a
    // leading dimension of 0.
    if (m == 0 || n == 0 || k == 0 || batches_ == 0) return;
    const float* a = inputs[0].data<float>();
    const float* b = inputs[1].data<float>();
    const float* dy = output_grads[0].data<float>();
    float* da = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
    float* db = input_grads[1].defined() ? input_grads[1].data<float>() : nullptr;
    if (fold_) {
      if (da) sgemm(false, true, batches_ * m, k, n, 1.0f, dy, n, b, n, 1.0f, da, k);
      if (db) sgemm(true, false, k, n, batches_ * m, 1.0f, a, k, dy, n, 1.0f, db, n);
      return;
    }
    for (std::int64_t t = 0; t < batches_; ++t) {
      const auto [ia, ib] = operands(t);
      const float* dyt = dy + t * m * n;
      if (da) sgemm(false, true, m, k, n, 1.0f, dyt, n, b + ib * k * n, n, 1.0f, da + ia * m * k, k);
      if (db) sgemm(true, false, k, n, m, 1.0f, a + ia * m * k, k, dyt, n, 1.0f, db + ib * k * n, n);
    }
  }
  bool has_fast_backward() const override { return true; }

  const char* name() const override { return "sgemm"; }

 private:
  // The matrices of a and b that batch t of the output multiplies.
  std::pair<std::int64_t, std::int64_t> operands(std::int64_t t) const {
    std::int64_t ia = 0, ib = 0, rest = t;
    for (std::size_t d = plan_.batch.size(); d-- > 0;) {
      const std::int64_t i = rest % plan_.batch[d];
      rest /= plan_.batch[d];
      ia += i * plan_.a_strides[d];
      ib += i * plan_.b_strides[d];
    }
    return {ia, ib};
  }

  MatMulLayer::Plan plan_;
  std::int64_t batches_ = 1;
  bool fold_ = false;
};

}  // namespace

std::unique_ptr<Kernel> make_matmul(const Layer& layer, const std::vector<Shape>& inputs) {
  return std::make_unique<MatMulKernel>(static_cast<const MatMulLayer&>(layer).plan(inputs[0], inputs[1]));
}

}  // namespace espresso::cpu
