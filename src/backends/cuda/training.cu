// The device side of training that belongs to no layer: filling gradient seeds, the solver's update
// (the same per-element rule as the CPU's, backends/update_rule.h) and the norm for gradient clipping.
#include <initializer_list>

#include "backends/cuda/context.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"
#include "espresso/errors.h"

namespace espresso::cuda {
namespace {

template <class T>
__global__ void fill_kernel(T* x, long long n, float value) {
  const T stored = from_float<T>(value);
  for (long long i : grid_stride(n)) {
    x[i] = stored;
  }
}

// flags[index] = 1 when some element is not finite; left alone otherwise (several tensors share a flag
// array that the caller zeroes).
__global__ void flag_non_finite_kernel(const float* x, long long n, int* flags, long long index) {
  for (long long i : grid_stride(n)) {
    if (!isfinite(x[i])) flags[index] = 1;
  }
}

__global__ void update_kernel(train::UpdateRule rule, float* w, float* g, float* h, float* u, long long n) {
  for (long long i : grid_stride(n)) {
    float weight = w[i];
    float history = h[i];
    float second = u != nullptr ? u[i] : 0.0f;
    g[i] = train::apply_update(rule, weight, g[i], history, second);
    w[i] = weight;
    h[i] = history;
    if (u != nullptr) u[i] = second;
  }
}

__global__ void sum_of_squares_kernel(const float* x, long long n, double* total) {
  __shared__ double partial[kThreads];
  double sum = 0.0;
  for (long long i : grid_stride(n)) {
    sum += static_cast<double>(x[i]) * x[i];
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(total, partial[0]);
}

void expect_on(const StreamContext& context, const Tensor& tensor, const char* what) {
  if (tensor.device() != context.device() || tensor.dtype() != DType::f32) {
    throw DeviceError(std::string(what) + ": expected an f32 tensor on " + context.device().str() + ", got " +
                      tensor.device().str());
  }
}

}  // namespace

void StreamContext::fill(Tensor& tensor, float value) {
  StreamContext& c = *this;
  if (tensor.device() != device()) {
    throw DeviceError("fill: expected a tensor on " + device().str() + ", got " + tensor.device().str());
  }
  const long long n = tensor.numel();
  if (n == 0) return;
  if (value == 0.0f) {  // +0 is all zero bits in f32, f16 and bf16
    ESPRESSO_CUDA_CHECK(cudaMemsetAsync(tensor.raw(), 0, tensor.bytes(), c.stream()));
    return;
  }
  with_storage_type(tensor.dtype(), "fill", [&](auto type) {
    using T = decltype(type);
    launch(c, n, fill_kernel<T>, static_cast<T*>(tensor.raw()), n, value);
  });
}

void StreamContext::flag_non_finite(const Tensor& tensor, Tensor& flags, std::int64_t index) {
  expect_on(*this, tensor, "non-finite check");
  if (flags.device() != device() || flags.dtype() != DType::i32 || index < 0 || index >= flags.numel())
    throw DeviceError("non-finite check: expected an i32 flag array on " + device().str() + " with element " +
                      std::to_string(index));
  const long long n = tensor.numel();
  if (n == 0) return;
  launch(*this, n, flag_non_finite_kernel, tensor.data<float>(), n, flags.data<std::int32_t>(),
         static_cast<long long>(index));
}

void StreamContext::apply_update(const train::UpdateRule& rule, Tensor& value, Tensor& grad, Tensor& history,
                                 Tensor* second) {
  StreamContext& c = *this;
  for (const Tensor* t : std::initializer_list<const Tensor*>{&value, &grad, &history, second}) {
    if (t != nullptr) expect_on(c, *t, "solver update");
  }
  const long long n = value.numel();
  if (n == 0) return;
  launch(c, n, update_kernel, rule, value.data<float>(), grad.data<float>(), history.data<float>(),
         second != nullptr ? second->data<float>() : nullptr, n);
}

double StreamContext::sum_of_squares(const Tensor& tensor) {
  StreamContext& c = *this;
  expect_on(c, tensor, "gradient norm");
  const long long n = tensor.numel();
  if (n == 0) return 0.0;
  auto total = allocate(sizeof(double), device(), "the gradient norm");
  ESPRESSO_CUDA_CHECK(cudaMemsetAsync(total.get(), 0, sizeof(double), c.stream()));
  launch(c, n, sum_of_squares_kernel, tensor.data<float>(), n, static_cast<double*>(total.get()));
  double result = 0.0;
  ESPRESSO_CUDA_CHECK(
      cudaMemcpyAsync(&result, total.get(), sizeof(double), cudaMemcpyDeviceToHost, c.stream()));
  c.synchronize();
  return result;
}

}  // namespace espresso::cuda
