// InnerProduct on the CPU: one sgemm over the whole batch, then a threaded bias pass; backward is
// two sgemms (input and weight gradients) and a column sum for the bias.
#include "layers/inner_product.h"

#include "backends/cpu/blas.h"
#include "backends/cpu/cpu_backend.h"
#include "core/parallel.h"

namespace espresso::cpu {
namespace {

class InnerProductKernel final : public Kernel {
 public:
  InnerProductKernel(const InnerProductLayer& layer, InnerProductLayer::Dims dims)
      : layer_(layer), d_(dims) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const float* w = layer_.weights()[0].data<float>();
    const bool transposed = layer_.transposed();
    sgemm(false, !transposed, d_.rows, d_.outputs, d_.inner, 1.0f, x, d_.inner, w,
          transposed ? d_.outputs : d_.inner, 0.0f, y, d_.outputs);
    if (!layer_.has_bias()) return;
    const float* bias = layer_.weights()[1].data<float>();
    parallel_for(
        d_.rows,
        [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t m = begin; m < end; ++m) {
            float* row = y + m * d_.outputs;
            for (std::int64_t n = 0; n < d_.outputs; ++n) row[n] += bias[n];
          }
        },
        std::max<std::int64_t>(1, (1 << 14) / d_.outputs));
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    const float* x = inputs[0].data<float>();
    const float* dy = output_grads[0].data<float>();
    const float* w = layer_.weights()[0].data<float>();
    float* dw = weight_grads[0].data<float>();
    const bool transposed = layer_.transposed();
    if (input_grads[0].defined()) {
      sgemm(false, transposed, d_.rows, d_.inner, d_.outputs, 1.0f, dy, d_.outputs, w,
            transposed ? d_.outputs : d_.inner, 1.0f, input_grads[0].data<float>(), d_.inner);
    }
    if (transposed) {
      sgemm(true, false, d_.inner, d_.outputs, d_.rows, 1.0f, x, d_.inner, dy, d_.outputs, 1.0f, dw,
            d_.outputs);
    } else {
      sgemm(true, false, d_.outputs, d_.inner, d_.rows, 1.0f, dy, d_.outputs, x, d_.inner, 1.0f, dw,
            d_.inner);
    }
    if (!layer_.has_bias()) return;
    float* db = weight_grads[1].data<float>();
    for (std::int64_t m = 0; m < d_.rows; ++m) {
      const float* row = dy + m * d_.outputs;
      for (std::int64_t n = 0; n < d_.outputs; ++n) db[n] += row[n];
    }
  }
  bool has_fast_backward() const override { return true; }

  const char* name() const override { return "sgemm"; }

 private:
  const InnerProductLayer& layer_;
  InnerProductLayer::Dims d_;
};

}  // namespace

std::unique_ptr<Kernel> make_inner_product(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& ip = static_cast<const InnerProductLayer&>(layer);
  return std::make_unique<InnerProductKernel>(ip, ip.dims(inputs[0]));
}

}  // namespace espresso::cpu
