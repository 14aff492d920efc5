// The CUDA kernels' factories, generated from the files in backends/cuda/. Each returns nullptr for
// configurations it does not cover, and the executor runs that layer on the CPU.
//
// Backward: a kernel that trains overrides Kernel::backward and has_fast_backward() (returning true).
// Every tensor it gets is on the context's device; it queues its work on context.stream() and, like
// Layer::backward, ADDS into the defined entries of input_grads and weight_grads (the executor zeroes
// them first). Layers that act differently in training read layer.training() when the kernel is made
// (Dropout, BatchNorm); a training net's weights are device tensors that the solver updates in place
// between iterations, so kernels keep pointers to them, never copies.
#pragma once

#include <memory>
#include <vector>

#include "backends/cuda/context.h"
#include "backends/kernel.h"

namespace espresso::cuda {

// The factories every file here defines (cmake/generate_tables.cmake lists them).
#define ESPRESSO_KERNEL(type, stem)                                                          \
  std::unique_ptr<Kernel> make_##stem(const Layer& layer, const std::vector<Shape>& inputs, \
                                      StreamContext& context);
#include "cuda_kernels.inc"
#undef ESPRESSO_KERNEL

// The layers' kernels in fp16 or bf16 (`dtype`): inputs and outputs in that type, weights converted
// once (StreamContext::device_weights_as; again before each training forward), fp32 arithmetic inside;
// those with a backward train in mixed precision (gradients in that type, weight gradients fp32). Files
// define them as make_lowp_<stem> beside the fp32 kernel, sharing its templated device code.
#define ESPRESSO_KERNEL(type, stem)                                                              \
  std::unique_ptr<Kernel> make_lowp_##stem(const Layer& layer, const std::vector<Shape>& inputs, \
                                           DType dtype, StreamContext& context);
#include "cuda_lowp_kernels.inc"
#undef ESPRESSO_KERNEL

// The same storing their 4-D tensors channels-last (Backend::make_channels_last_kernel): inference only,
// inputs and outputs in `dtype`; shapes as the layer sees them (N, C, H, W). Files define them as
// make_nhwc_<stem>.
#define ESPRESSO_KERNEL(type, stem)                                                              \
  std::unique_ptr<Kernel> make_nhwc_##stem(const Layer& layer, const std::vector<Shape>& inputs, \
                                           DType dtype, StreamContext& context);
#include "cuda_nhwc_kernels.inc"
#undef ESPRESSO_KERNEL

// An N, C, H, W shape in channels-last memory order (N, H, W, C), and where each of its axes goes there.
inline Shape channels_last_order(const Shape& shape) { return Shape{shape[0], shape[2], shape[3], shape[1]}; }
inline int channels_last_axis(int axis) {
  constexpr int kTo[] = {0, 3, 1, 2};
  return kTo[axis];
}

// cuBLAS's name of a storage type (f32, f16, bf16) for its Ex calls.
inline cudaDataType_t cublas_type(DType dtype) {
  return dtype == DType::bf16 ? CUDA_R_16BF : dtype == DType::f16 ? CUDA_R_16F : CUDA_R_32F;
}

// Runs `calls` (returning the first failing status, else success) in cuBLAS's default math: the
// context's handle may be in TF32 math (Precision::tf32), and fp16/bf16 tensor cores are these
// calls'. The handle's mode is restored before a failure is thrown.
template <class Calls>
void in_default_math(cublasHandle_t cublas, Calls&& calls) {
  cublasMath_t mode;
  ESPRESSO_CUDA_CHECK(cublasGetMathMode(cublas, &mode));
  ESPRESSO_CUDA_CHECK(cublasSetMathMode(cublas, CUBLAS_DEFAULT_MATH));
  const cublasStatus_t status = calls();
  ESPRESSO_CUDA_CHECK(cublasSetMathMode(cublas, mode));
  ESPRESSO_CUDA_CHECK(status);
}

// What every kernel here shares: it queues its work on the context's stream, and it has its own
// backward (a kernel that has none says so). Derived classes state only their math.
class CudaKernel : public Kernel {
 public:
  explicit CudaKernel(StreamContext& context) : context_(context) {}
  bool has_fast_backward() const override { return true; }
  const char* name() const override { return "cuda"; }

 protected:
  StreamContext& context_;
};

// A float Convolution's int8 kernel (Precision::int8; quantized_convolution.cu), or nullptr for shapes it
// does not cover.
std::unique_ptr<Kernel> int8_convolution_kernel(const Layer& layer, const std::vector<Shape>& inputs,
                                                StreamContext& context);

// Input 0 copied to every output: Flatten, Reshape, Split and Dropout at inference.
std::unique_ptr<Kernel> copy_kernel(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context);

}  // namespace espresso::cuda
