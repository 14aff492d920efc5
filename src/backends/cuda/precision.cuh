// Mixed precision in kernels: the storage types a kernel template is instantiated for (float, and
// __half / __nv_bfloat16 for Precision::fp16 / bf16), read into float and written back with rounding
// to nearest, so that arithmetic is always fp32; and the host-side choice of instantiation by DType.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "espresso/errors.h"
#include "espresso/tensor.h"

namespace espresso::cuda {

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__half v) { return __half2float(v); }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ T from_float(float v);
template <>
__device__ inline float from_float<float>(float v) {
  return v;
}
template <>
__device__ inline __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Calls visit(T{}) with T the storage type of `dtype` (f32, f16 or bf16); throws UnsupportedError for
// other types, naming `what`.
template <class Visit>
void with_storage_type(DType dtype, const char* what, Visit&& visit) {
  switch (dtype) {
    case DType::f32:
      visit(float{});
      return;
    case DType::f16:
      visit(__half{});
      return;
    case DType::bf16:
      visit(__nv_bfloat16{});
      return;
    default:
      throw UnsupportedError(std::string(what) + ": no CUDA kernel for " + dtype_name(dtype) + " tensors");
  }
}

}  // namespace espresso::cuda
