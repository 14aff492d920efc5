#include <string>

#include "backends/cuda/check.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_backend.h"
#include "espresso/errors.h"

namespace espresso::cuda {

void check(cudaError_t status, const char* call) {
  if (status == cudaSuccess) return;
  // Clears the error so that later calls do not report it again (sticky errors stay regardless).
  cudaGetLastError();
  throw DeviceError(std::string(call) + " failed: " + cudaGetErrorName(status) + " (" +
                    cudaGetErrorString(status) + ")");
}

void check(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const std::string not_loaded = cublas_load_error();
  throw DeviceError(std::string(call) + " failed: " + cublasGetStatusName(status) + " (" +
                    (not_loaded.empty() ? std::string(cublasGetStatusString(status)) : not_loaded) + ")");
}

void check(cudnnStatus_t status, const char* call) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  throw DeviceError(std::string(call) + " failed: " + cudnnGetErrorString(status));
}

DeviceGuard::DeviceGuard(int index) {
  ESPRESSO_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != index) ESPRESSO_CUDA_CHECK(cudaSetDevice(index));
}

DeviceGuard::~DeviceGuard() {
  int current = previous_;
  if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
}


int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    // No driver or no GPU: the backend is simply unavailable, which callers report themselves.
    cudaGetLastError();
    return 0;
  }
  return count;
}

void require_device(Device device) {
  if (device.is_cpu()) throw DeviceError("expected a CUDA device, got cpu");
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw DeviceError(
        "device " + device.str() + ": no CUDA device found" +
        (status == cudaSuccess ? std::string() : std::string(" (") + cudaGetErrorString(status) + ")"));
  }
  if (device.index < 0 || device.index >= count) {
    throw DeviceError("device " + device.str() + " does not exist: " + std::to_string(count) +
                      " CUDA device(s) found (cuda:0 to cuda:" + std::to_string(count - 1) + ")");
  }
}

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> devices;
  const int count = device_count();
  if (count == 0) return devices;
  int driver = 0, runtime = 0;
  ESPRESSO_CUDA_CHECK(cudaDriverGetVersion(&driver));
  ESPRESSO_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  for (int index = 0; index < count; ++index) {
    cudaDeviceProp properties{};
    ESPRESSO_CUDA_CHECK(cudaGetDeviceProperties(&properties, index));
    DeviceInfo info;
    info.device = Device::cuda(index);
    info.name = properties.name;
    info.total_memory = properties.totalGlobalMem;
    info.compute_major = properties.major;
    info.compute_minor = properties.minor;
    info.multiprocessors = properties.multiProcessorCount;
    info.driver_version = driver;
    info.runtime_version = runtime;
    char bus_id[32] = {};
    ESPRESSO_CUDA_CHECK(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), index));
    info.pci_bus_id = bus_id;
    DeviceGuard guard(index);
    std::size_t free_bytes = 0, total_bytes = 0;
    ESPRESSO_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    info.free_memory = free_bytes;
    devices.push_back(std::move(info));
  }
  return devices;
}

}  // namespace espresso::cuda
