// InnerProduct on the CPU: one sgemm over the whole batch, then a threaded bias pass.
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
