// Conversions between f32, f16 and bf16 on the GPU (StreamContext::convert): the casts the executor
// puts at the edges of the layers that run in a low precision, and the weights converted once.
#include "backends/cuda/launch.cuh"
#include "backends/cuda/precision.cuh"

namespace espresso::cuda {
namespace {

template <class From, class To>
__global__ void convert_elements(const From* __restrict__ x, To* __restrict__ y, long long n) {
  for (long long i : grid_stride(n)) y[i] = from_float<To>(to_float(x[i]));
}

template <class From, class To>
__global__ void add_converted_elements(const From* __restrict__ x, To* __restrict__ y, long long n) {
  for (long long i : grid_stride(n)) y[i] = from_float<To>(to_float(y[i]) + to_float(x[i]));
}

// Calls visit(From{}, To{}) with the storage types of `from` and `to` (precision.cuh).
template <class Visit>
void with_storage_types(DType from, DType to, const char* what, Visit&& visit) {
  with_storage_type(from, what, [&](auto source) {
    with_storage_type(to, what, [&](auto target) { visit(source, target); });
  });
}

}  // namespace

void StreamContext::convert(const Tensor& source, Tensor& destination) {
  if (source.device() != device_ || destination.device() != device_ ||
      source.numel() != destination.numel()) {
    throw DeviceError("convert: expected two tensors of " + std::to_string(destination.numel()) +
                      " elements on " + device_.str());
  }
  const long long n = source.numel();
  if (n == 0) return;
  if (source.dtype() == destination.dtype()) {
    ESPRESSO_CUDA_CHECK(
        cudaMemcpyAsync(destination.raw(), source.raw(), source.bytes(), cudaMemcpyDeviceToDevice, stream_));
    return;
  }
  with_storage_types(source.dtype(), destination.dtype(), "convert", [&](auto from, auto to) {
    using From = decltype(from);
    using To = decltype(to);
    launch(*this, n, convert_elements<From, To>, static_cast<const From*>(source.raw()),
           static_cast<To*>(destination.raw()), n);
  });
}

void StreamContext::add_converted(const Tensor& source, Tensor& destination) {
  if (source.device() != device_ || destination.device() != device_ ||
      source.numel() != destination.numel()) {
    throw DeviceError("add_converted: expected two tensors of " + std::to_string(destination.numel()) +
                      " elements on " + device_.str());
  }
  const long long n = source.numel();
  if (n == 0) return;
  with_storage_types(source.dtype(), destination.dtype(), "add_converted", [&](auto from, auto to) {
    using From = decltype(from);
    using To = decltype(to);
    launch(*this, n, add_converted_elements<From, To>, static_cast<const From*>(source.raw()),
           static_cast<To*>(destination.raw()), n);
  });
}

void StreamContext::refresh_converted_weights() {
  for (auto& [key, weights] : converted_weights_) convert(weights.full, weights.copy);
}

const Tensor& StreamContext::device_weights_as(const Tensor& host, DType dtype, const std::string& owner) {
  const Tensor& full = device_weights(host, owner);
  if (dtype == DType::f32) return full;
  auto it = converted_weights_.find({full.raw(), dtype});
  if (it != converted_weights_.end()) return it->second.copy;
  auto memory = allocate(static_cast<std::size_t>(full.numel()) * dtype_size(dtype), device_,
                         "the " + std::string(dtype_name(dtype)) + " weights of " + owner);
  Tensor copy = Tensor::wrap(memory.get(), full.shape(), dtype, device_, memory);
  convert(full, copy);
  const ConvertedWeights entry{full, std::move(copy)};
  return converted_weights_.emplace(std::make_pair(full.raw(), dtype), entry).first->second.copy;
}

}  // namespace espresso::cuda
