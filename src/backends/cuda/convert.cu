// Conversions between f32, f16 and bf16 on the GPU (StreamContext::convert): the casts the executor
// puts at the edges of the layers that run in a low precision, and the weights converted once.
#include <algorithm>
#include <limits>

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

// Channels-last conversions view each image as a rows x columns matrix and transpose it: [C, H·W] into
// [H·W, C] and back. Matrices with a side under a tile (three input channels, 7x7 planes) take one thread
// per destination element; larger ones go through shared-memory tiles, so both sides are read and written
// along rows.
constexpr int kTile = 32;
constexpr int kTileRows = 8;  // threads per tile column: each moves kTile / kTileRows elements

template <class From, class To>
__global__ void transpose_elements(const From* __restrict__ x, To* __restrict__ y, long long n, int rows,
                                   int columns) {
  const long long per_image = static_cast<long long>(rows) * columns;
  for (long long i : grid_stride(n)) {
    const long long image = i / per_image;
    const long long at = i - image * per_image;  // y's [column][row]
    const long long column = at / rows, row = at - column * rows;
    y[i] = from_float<To>(to_float(x[image * per_image + row * columns + column]));
  }
}

template <class From, class To>
__global__ void transpose_tiles(const From* __restrict__ x, To* __restrict__ y, long long images, int rows,
                                int columns) {
  __shared__ float tile[kTile][kTile + 1];  // +1: the column reads hit distinct banks
  const long long per_image = static_cast<long long>(rows) * columns;
  const int row0 = static_cast<int>(blockIdx.y) * kTile, column0 = static_cast<int>(blockIdx.x) * kTile;
  for (long long image = blockIdx.z; image < images; image += gridDim.z) {
    const From* in = x + image * per_image;
    To* out = y + image * per_image;
    for (int k = threadIdx.y; k < kTile; k += kTileRows) {
      const int row = row0 + k, column = column0 + threadIdx.x;
      if (row < rows && column < columns)
        tile[k][threadIdx.x] = to_float(in[static_cast<long long>(row) * columns + column]);
    }
    __syncthreads();
    for (int k = threadIdx.y; k < kTile; k += kTileRows) {
      const int column = column0 + k, row = row0 + threadIdx.x;
      if (row < rows && column < columns)
        out[static_cast<long long>(column) * rows + row] = from_float<To>(tile[threadIdx.x][k]);
    }
    __syncthreads();
  }
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

void StreamContext::convert_layout(const Tensor& source, Tensor& destination, bool to_channels_last) {
  const Shape& shape = source.shape();
  if (source.device() != device_ || destination.device() != device_ || shape.rank() != 4 ||
      destination.shape() != shape) {
    throw DeviceError("convert_layout: expected two 4-D tensors of shape " + shape.str() + " on " +
                      device_.str());
  }
  const long long images = shape[0];
  const long long channels = shape[1], plane = shape[2] * shape[3];
  if (images * channels * plane == 0) return;
  if (channels > std::numeric_limits<int>::max() || plane > std::numeric_limits<int>::max())
    throw DeviceError("convert_layout: " + shape.str() + " has more than 2^31 channels or positions");
  // Each image is a rows x columns matrix in `source`, columns x rows in `destination`.
  const int rows = static_cast<int>(to_channels_last ? channels : plane);
  const int columns = static_cast<int>(to_channels_last ? plane : channels);
  with_storage_types(source.dtype(), destination.dtype(), "convert_layout", [&](auto from, auto to) {
    using From = decltype(from);
    using To = decltype(to);
    const auto* x = static_cast<const From*>(source.raw());
    auto* y = static_cast<To*>(destination.raw());
    if (rows < kTile || columns < kTile) {
      const long long n = images * rows * columns;
      launch(*this, n, transpose_elements<From, To>, x, y, n, rows, columns);
      return;
    }
    const Grid grid{dim3(static_cast<unsigned>((columns + kTile - 1) / kTile),
                         static_cast<unsigned>((rows + kTile - 1) / kTile),
                         static_cast<unsigned>(std::min<long long>(images, 65535))),
                    dim3(kTile, kTileRows)};
    if (grid.blocks.y > 65535) throw DeviceError("convert_layout: " + shape.str() + " has too many rows");
    launch(*this, grid, transpose_tiles<From, To>, x, y, images, rows, columns);
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
