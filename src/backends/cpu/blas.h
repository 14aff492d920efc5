// A thin row-major GEMM wrapper, so kernels state only what differs between calls: espresso's own
// AVX2/AVX-512 GEMM (gemm.h) where the processor has it, OpenBLAS elsewhere.
#pragma once

#include <cblas.h>

#include <climits>
#include <cstdint>
#include <string>

#include "backends/cpu/gemm.h"
#include "core/parallel.h"
#include "espresso/errors.h"
#include "espresso/net.h"

namespace espresso::cpu {

// c = alpha · op(a) · op(b) + beta · c, all row-major; op transposes when asked.
inline void sgemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k,
                  float alpha, const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta,
                  float* c, std::int64_t ldc) {
  if (fast_gemm_available()) {
    gemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  for (std::int64_t v : {m, n, k, lda, ldb, ldc}) {
    if (v > INT_MAX) {
      throw UnsupportedError("matrix dimension " + std::to_string(v) + " exceeds what OpenBLAS indexes");
    }
  }
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda),
              b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// Makes OpenBLAS single-threaded while kernels run GEMMs from several pool threads at once:
// its own threads would oversubscribe the cores. OpenBLAS 0.3.21 has only a process-wide setting.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() { openblas_set_num_threads(1); }
  ~SingleThreadedBlas() { openblas_set_num_threads(num_threads()); }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;
};

// How a GEMM-based kernel spreads a batch over the threads. With at least as many images as
// threads, each thread takes whole images with single-threaded GEMMs: the unfolding runs in
// parallel too and no thread waits inside an image. With fewer images, one image's GEMM is the
// only parallelism left, so images run in turn and OpenBLAS threads each GEMM.
class ImageSchedule {
 public:
  explicit ImageSchedule(std::int64_t batch)
      : batch_(batch), slots_(batch >= num_threads() && num_threads() > 1 ? num_threads() : 1) {}
  // Scratch buffers needed: one per concurrently running image.
  int slots() const { return slots_; }
  // Calls body(image, slot) for every image.
  template <class Body>
  void run(const Body& body) const {
    if (slots_ == 1) {
      for (std::int64_t n = 0; n < batch_; ++n) body(n, 0);
      return;
    }
    SingleThreadedBlas single;
    parallel_for(slots_, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t slot = begin; slot < end; ++slot) {
        for (std::int64_t n = slot; n < batch_; n += slots_) body(n, static_cast<int>(slot));
      }
    });
  }

 private:
  std::int64_t batch_;
  int slots_;
};

}  // namespace espresso::cpu
