// Constant on the GPU: the weight is uploaded once when the kernel is made; each forward copies it
// into the output on the stream (the output buffer may be reused by other layers in between).
#include "backends/cuda/kernels.h"

namespace espresso::cuda {
namespace {

class ConstantKernel final : public CudaKernel {
 public:
  ConstantKernel(const Tensor& value, StreamContext& context) : CudaKernel(context), value_(value) {}

  void forward(const std::vector<Tensor>&, std::vector<Tensor>& outputs) override {
    if (outputs[0].bytes() == 0) return;
    ESPRESSO_CUDA_CHECK(cudaMemcpyAsync(outputs[0].raw(), value_.raw(), outputs[0].bytes(),
                                        cudaMemcpyDeviceToDevice, context_.stream()));
  }
  // No inputs, and the constant is part of the graph, not trained: nothing takes a gradient.
  void backward(const Layer&, const std::vector<Tensor>&, const std::vector<Tensor>&,
                const std::vector<Tensor>&, std::vector<Tensor>&, std::vector<Tensor>&) override {}
  const char* name() const override { return "cuda-copy"; }

 private:
  const Tensor& value_;  // owned by the context's weight cache
};

}  // namespace

std::unique_ptr<Kernel> make_constant(const Layer& layer, const std::vector<Shape>&, StreamContext& context) {
  return std::make_unique<ConstantKernel>(
      context.device_weights(layer.weights()[0], "layer '" + layer.name() + "'"), context);
}

}  // namespace espresso::cuda
