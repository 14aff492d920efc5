// ESPRESSO_HOST_DEVICE marks small inline functions that the CPU code and the CUDA kernels share, so
// that both devices compute exactly the same arithmetic from one definition.
#pragma once

#ifdef __CUDACC__
#define ESPRESSO_HOST_DEVICE __host__ __device__
#else
#define ESPRESSO_HOST_DEVICE
#endif
