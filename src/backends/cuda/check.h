// Every CUDA runtime, cuBLAS and cuDNN call goes through ESPRESSO_CUDA_CHECK, which turns a failure
// into a DeviceError naming the call and the library's own description of the error.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>

namespace espresso::cuda {

void check(cudaError_t status, const char* call);
void check(cublasStatus_t status, const char* call);
void check(cudnnStatus_t status, const char* call);
// Why cuBLAS or cuBLASLt, which load on first use (cublas_loader.cpp), could not be loaded; empty once they
// are.
std::string cublas_load_error();

// Makes `index` the calling thread's current device for the guard's lifetime.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace espresso::cuda

#define ESPRESSO_CUDA_CHECK(call) ::espresso::cuda::check((call), #call)
