// The device side of training that belongs to no layer: filling gradient seeds, the solver's update
// (the same per-element rule as the CPU's, backends/update_rule.h) and the norm for gradient clipping.
#include <algorithm>
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

// Tensors handed to one launch by value: a net's parameters checked in one or two launches instead of one
// each (ResNet-18's 62 checks had taken 0.3 ms of an 11 ms fp16 training step, mostly launch floors).
constexpr int kListedTensors = 64;
struct TensorList {
  const float* data[kListedTensors];
  long long count[kListedTensors];
};

// flags[first + t] = 1 when some element of list tensor t (blockIdx.y) is not finite; left alone otherwise
// (the caller zeroes the flags).
__global__ void flag_non_finite_kernel(TensorList list, int* flags, long long first) {
  const float* x = list.data[blockIdx.y];
  const long long n = list.count[blockIdx.y];
  for (long long i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    if (!isfinite(x[i])) flags[first + blockIdx.y] = 1;
  }
}

// Blobs updated by one launch, by value (within the 4 KB of a launch's parameters): a net's parameters in
// one or two launches instead of one each (ResNet-18's 62 had taken 0.23 ms of a training step).
constexpr int kListedUpdates = 40;
struct UpdateList {
  train::UpdateRule rule[kListedUpdates];
  float* w[kListedUpdates];
  float* g[kListedUpdates];
  float* h[kListedUpdates];
  float* u[kListedUpdates];  // null but for AdaDelta and Adam
  long long count[kListedUpdates];
};

// Blob blockIdx.y of the list.
__global__ void update_kernel(UpdateList list) {
  const int b = static_cast<int>(blockIdx.y);
  const train::UpdateRule& rule = list.rule[b];
  float *w = list.w[b], *g = list.g[b], *h = list.h[b], *u = list.u[b];
  for (long long i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < list.count[b];
       i += std::int64_t{gridDim.x} * blockDim.x) {
    float weight = w[i];
    float history = h[i];
    float second = u != nullptr ? u[i] : 0.0f;
    g[i] = train::apply_update(rule, weight, g[i], history, second);
    w[i] = weight;
    h[i] = history;
    if (u != nullptr) u[i] = second;
  }
}

// Blocks enough for the largest of a list's tensors, up to four per multiprocessor (a row of blocks
// per tensor; the rest of a short tensor's row exits at once).
dim3 list_grid(const StreamContext& context, long long largest, std::size_t listed) {
  return dim3(static_cast<unsigned>(
                  std::min<long long>((largest + kThreads - 1) / kThreads, 4LL * context.multiprocessors())),
              static_cast<unsigned>(listed));
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

void StreamContext::flag_non_finite(const std::vector<Tensor>& tensors, Tensor& flags) {
  for (const Tensor& tensor : tensors) expect_on(*this, tensor, "non-finite check");
  if (flags.device() != device() || flags.dtype() != DType::i32 ||
      flags.numel() != static_cast<std::int64_t>(tensors.size()))
    throw DeviceError("non-finite check: expected an i32 flag array on " + device().str() + " with " +
                      std::to_string(tensors.size()) + " elements");
  for (std::size_t first = 0; first < tensors.size(); first += kListedTensors) {
    const std::size_t listed = std::min<std::size_t>(kListedTensors, tensors.size() - first);
    TensorList list{};
    long long largest = 0;
    for (std::size_t t = 0; t < listed; ++t) {
      list.data[t] = tensors[first + t].data<float>();
      list.count[t] = tensors[first + t].numel();
      largest = std::max(largest, list.count[t]);
    }
    if (largest == 0) continue;
    launch(*this, Grid{list_grid(*this, largest, listed), dim3(kThreads)}, flag_non_finite_kernel, list,
           flags.data<std::int32_t>(), static_cast<long long>(first));
  }
}

void StreamContext::apply_update(const train::UpdateRule& rule, Tensor& value, Tensor& grad, Tensor& history,
                                 Tensor* second) {
  apply_updates({{rule, &value, &grad, &history, second}});
}

void StreamContext::apply_updates(const std::vector<BlobUpdate>& updates) {
  for (const BlobUpdate& u : updates) {
    for (const Tensor* t : {u.value, u.grad, u.history, u.second}) {
      if (t != nullptr) expect_on(*this, *t, "solver update");
    }
  }
  for (std::size_t first = 0; first < updates.size(); first += kListedUpdates) {
    const std::size_t listed = std::min<std::size_t>(kListedUpdates, updates.size() - first);
    UpdateList list{};
    long long largest = 0;
    for (std::size_t b = 0; b < listed; ++b) {
      const BlobUpdate& u = updates[first + b];
      list.rule[b] = u.rule;
      list.w[b] = u.value->data<float>();
      list.g[b] = u.grad->data<float>();
      list.h[b] = u.history->data<float>();
      list.u[b] = u.second != nullptr ? u.second->data<float>() : nullptr;
      list.count[b] = u.value->numel();
      largest = std::max(largest, list.count[b]);
    }
    if (largest > 0)
      launch(*this, Grid{list_grid(*this, largest, listed), dim3(kThreads)}, update_kernel, list);
  }
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
