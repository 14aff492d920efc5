// cuBLAS and cuBLASLt, loaded on first use. Linking libcublas loads libcublasLt with it, and their start-up
// costs about 210 MB of resident memory in every process, also in one that only trains on the CPU (issue
// #22). The few entry points the CUDA backend calls are defined here instead: the first call opens the
// library (the toolkit's copy, else whichever the loader finds) and each forwards to the real function, so a
// process that never runs a GEMM on a GPU never maps cuBLAS.
#include <cublasLt.h>
#include <dlfcn.h>

#include <initializer_list>
#include <string>

#include "backends/cuda/check.h"

namespace espresso::cuda {
namespace {

struct Library {
  void* handle = nullptr;
  std::string error;
};

Library open(std::initializer_list<const char*> paths) {
  Library lib;
  for (const char* path : paths) {
    lib.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib.handle) break;
    const char* why = dlerror();
    lib.error += (lib.error.empty() ? "" : "; ") + std::string(why ? why : path);
  }
  return lib;
}

const Library& library() {
  static const Library lib = open({ESPRESSO_CUBLAS_PATH, ESPRESSO_CUBLAS_SONAME});
  return lib;
}

const Library& lt_library() {
  static const Library lib = open({ESPRESSO_CUBLASLT_PATH, ESPRESSO_CUBLASLT_SONAME});
  return lib;
}

void* resolve(const char* name) {
  const Library& lib = library();
  return lib.handle ? dlsym(lib.handle, name) : nullptr;
}

void* resolve_lt(const char* name) {
  const Library& lib = lt_library();
  return lib.handle ? dlsym(lib.handle, name) : nullptr;
}

}  // namespace

std::string cublas_load_error() {
  if (const Library& lib = library(); !lib.handle) return "cannot load cuBLAS: " + lib.error;
  if (const Library& lt = lt_library(); !lt.handle) return "cannot load cuBLASLt: " + lt.error;
  return {};
}

}  // namespace espresso::cuda

// Each forwards to the function of the same name in the loaded library; without the library (or
// the symbol) it reports CUBLAS_STATUS_NOT_INITIALIZED, which check() explains.
#define ESPRESSO_FORWARD(resolver, name, params, args)                                    \
  extern "C" cublasStatus_t CUBLASWINAPI name params {                                    \
    using Function = cublasStatus_t(CUBLASWINAPI*) params;                                \
    static const auto real = reinterpret_cast<Function>(espresso::cuda::resolver(#name)); \
    return real ? real args : CUBLAS_STATUS_NOT_INITIALIZED;                              \
  }
#define ESPRESSO_CUBLAS_FORWARD(name, params, args) ESPRESSO_FORWARD(resolve, name, params, args)
#define ESPRESSO_CUBLASLT_FORWARD(name, params, args) ESPRESSO_FORWARD(resolve_lt, name, params, args)

ESPRESSO_CUBLAS_FORWARD(cublasCreate_v2, (cublasHandle_t * handle), (handle))
ESPRESSO_CUBLAS_FORWARD(cublasDestroy_v2, (cublasHandle_t handle), (handle))
ESPRESSO_CUBLAS_FORWARD(cublasSetStream_v2, (cublasHandle_t handle, cudaStream_t stream), (handle, stream))
ESPRESSO_CUBLAS_FORWARD(cublasSetWorkspace_v2, (cublasHandle_t handle, void* workspace, size_t bytes),
                        (handle, workspace, bytes))
ESPRESSO_CUBLAS_FORWARD(cublasGetMathMode, (cublasHandle_t handle, cublasMath_t* mode), (handle, mode))
ESPRESSO_CUBLAS_FORWARD(cublasSetMathMode, (cublasHandle_t handle, cublasMath_t mode), (handle, mode))
ESPRESSO_CUBLAS_FORWARD(cublasSgemm_v2,
                        (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                         int n, int k, const float* alpha, const float* a, int lda, const float* b, int ldb,
                         const float* beta, float* c, int ldc),
                        (handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc))
ESPRESSO_CUBLAS_FORWARD(cublasSgemmStridedBatched,
                        (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                         int n, int k, const float* alpha, const float* a, int lda, long long int stride_a,
                         const float* b, int ldb, long long int stride_b, const float* beta, float* c,
                         int ldc, long long int stride_c, int batch),
                        (handle, transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c,
                         ldc, stride_c, batch))
ESPRESSO_CUBLAS_FORWARD(cublasGemmEx,
                        (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                         int n, int k, const void* alpha, const void* a, cudaDataType a_type, int lda,
                         const void* b, cudaDataType b_type, int ldb, const void* beta, void* c,
                         cudaDataType c_type, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t algo),
                        (handle, transa, transb, m, n, k, alpha, a, a_type, lda, b, b_type, ldb, beta, c,
                         c_type, ldc, compute, algo))
ESPRESSO_CUBLAS_FORWARD(cublasGemmStridedBatchedEx,
                        (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                         int n, int k, const void* alpha, const void* a, cudaDataType a_type, int lda,
                         long long int stride_a, const void* b, cudaDataType b_type, int ldb,
                         long long int stride_b, const void* beta, void* c, cudaDataType c_type, int ldc,
                         long long int stride_c, int batch, cublasComputeType_t compute,
                         cublasGemmAlgo_t algo),
                        (handle, transa, transb, m, n, k, alpha, a, a_type, lda, stride_a, b, b_type, ldb,
                         stride_b, beta, c, c_type, ldc, stride_c, batch, compute, algo))

ESPRESSO_CUBLASLT_FORWARD(cublasLtCreate, (cublasLtHandle_t * handle), (handle))
ESPRESSO_CUBLASLT_FORWARD(cublasLtMatmulDescCreate,
                          (cublasLtMatmulDesc_t * desc, cublasComputeType_t compute, cudaDataType_t scale),
                          (desc, compute, scale))
ESPRESSO_CUBLASLT_FORWARD(cublasLtMatmulDescDestroy, (cublasLtMatmulDesc_t desc), (desc))
ESPRESSO_CUBLASLT_FORWARD(cublasLtMatmulDescSetAttribute,
                          (cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                           const void* buf, size_t bytes),
                          (desc, attribute, buf, bytes))
ESPRESSO_CUBLASLT_FORWARD(cublasLtMatrixLayoutCreate,
                          (cublasLtMatrixLayout_t * layout, cudaDataType type, uint64_t rows, uint64_t cols,
                           int64_t ld),
                          (layout, type, rows, cols, ld))
ESPRESSO_CUBLASLT_FORWARD(cublasLtMatrixLayoutDestroy, (cublasLtMatrixLayout_t layout), (layout))
ESPRESSO_CUBLASLT_FORWARD(cublasLtMatmulPreferenceCreate, (cublasLtMatmulPreference_t * preference),
                          (preference))
ESPRESSO_CUBLASLT_FORWARD(cublasLtMatmulPreferenceDestroy, (cublasLtMatmulPreference_t preference),
                          (preference))
ESPRESSO_CUBLASLT_FORWARD(cublasLtMatmulPreferenceSetAttribute,
                          (cublasLtMatmulPreference_t preference,
                           cublasLtMatmulPreferenceAttributes_t attribute, const void* buf, size_t bytes),
                          (preference, attribute, buf, bytes))
ESPRESSO_CUBLASLT_FORWARD(cublasLtMatmulAlgoGetHeuristic,
                          (cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                           cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                           cublasLtMatmulPreference_t preference, int requested,
                           cublasLtMatmulHeuristicResult_t results[], int* returned),
                          (handle, desc, a, b, c, d, preference, requested, results, returned))
ESPRESSO_CUBLASLT_FORWARD(cublasLtMatmul,
                          (cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                           const void* a, cublasLtMatrixLayout_t a_layout, const void* b,
                           cublasLtMatrixLayout_t b_layout, const void* beta, const void* c,
                           cublasLtMatrixLayout_t c_layout, void* d, cublasLtMatrixLayout_t d_layout,
                           const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes,
                           cudaStream_t stream),
                          (handle, desc, alpha, a, a_layout, b, b_layout, beta, c, c_layout, d, d_layout,
                           algo, workspace, workspace_bytes, stream))

#undef ESPRESSO_CUBLASLT_FORWARD
#undef ESPRESSO_CUBLAS_FORWARD
#undef ESPRESSO_FORWARD

extern "C" const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) {
  using Function = const char*(CUBLASWINAPI*)(cublasStatus_t);
  static const auto real = reinterpret_cast<Function>(espresso::cuda::resolve("cublasGetStatusName"));
  return real ? real(status) : "CUBLAS_STATUS_NOT_INITIALIZED";
}

extern "C" const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) {
  using Function = const char*(CUBLASWINAPI*)(cublasStatus_t);
  static const auto real = reinterpret_cast<Function>(espresso::cuda::resolve("cublasGetStatusString"));
  return real ? real(status) : "the cuBLAS library is not loaded";
}
