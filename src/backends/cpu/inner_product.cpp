// InnerProduct on the CPU: one sgemm over the whole batch, then a threaded bias pass; backward is
// two sgemms (input and weight gradients) and a column sum for the bias. Pruned, weight-shared weights
// (Deep Compression's: few nonzeros, at most 256 distinct values) run as sparse × dense instead where the
// cost model (sparse_product_wins) says that wins: per output, its nonzeros' columns and codebook indices
// (CSR), the values looked up in the codebook as they are used (docs/compression.md).
#include "layers/inner_product.h"

#include <immintrin.h>

#include <algorithm>
#include <optional>

#include "backends/cpu/blas.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/sparse_inner_product.h"
#include "core/parallel.h"

namespace espresso::cpu {
namespace {

#if defined(__x86_64__)
// out[r · out_stride + n] = in_r · W[n] + bias[n] for kRows input rows in_r (in + r · inner) and n in
// [begin, end): each 16 floats of W's row loaded once for all kRows rows, four FMA chains in all (split along
// the row when there are fewer input rows), a masked load for the tail.
template <int kRows>
__attribute__((target("avx512f,avx2,fma"))) void row_dots_avx512(const float* in, const float* w,
                                                                 std::int64_t inner, std::int64_t begin,
                                                                 std::int64_t end, const float* bias,
                                                                 float* out, std::int64_t out_stride) {
  constexpr int kChains = kRows == 1 ? 4 : kRows == 2 ? 2 : 1;
  for (std::int64_t n = begin; n < end; ++n) {
    const float* row = w + n * inner;
    __m512 acc[kRows][kChains];
    for (auto& chains : acc)
      for (auto& a : chains) a = _mm512_setzero_ps();
    std::int64_t k = 0;
    for (; k + 16 * kChains <= inner; k += 16 * kChains) {
      for (int c = 0; c < kChains; ++c) {
        const __m512 weights = _mm512_loadu_ps(row + k + 16 * c);
        for (int r = 0; r < kRows; ++r)
          acc[r][c] = _mm512_fmadd_ps(_mm512_loadu_ps(in + r * inner + k + 16 * c), weights, acc[r][c]);
      }
    }
    for (; k < inner; k += 16) {
      const auto tail = static_cast<__mmask16>(inner - k >= 16 ? 0xFFFF : (1u << (inner - k)) - 1);
      const __m512 weights = _mm512_maskz_loadu_ps(tail, row + k);
      for (int r = 0; r < kRows; ++r)
        acc[r][0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, in + r * inner + k), weights, acc[r][0]);
    }
    for (int r = 0; r < kRows; ++r) {
      __m512 sum = acc[r][0];
      for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[r][c]);
      // Summed through memory: GCC 12 warns inside _mm512_reduce_add_ps (a false "may be used
      // uninitialized").
      alignas(64) float lanes[16];
      _mm512_store_ps(lanes, sum);
      float total = 0.0f;
      for (const float lane : lanes) total += lane;
      out[r * out_stride + n] = total + (bias ? bias[n] : 0.0f);
    }
  }
}
#endif

class InnerProductKernel final : public Kernel {
 public:
  InnerProductKernel(const InnerProductLayer& layer, InnerProductLayer::Dims dims)
      : layer_(layer), d_(dims) {
    choose_form();
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    // Weights changed in place (training, Net::weights): choose again on the new values.
    if (!training_ && weights_version_ != layer_.weights()[0].version()) choose_form();
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    if (sparse_) {
      sparse_->multiply(x, layer_.has_bias() ? layer_.weights()[1].data<float>() : nullptr, y, d_.rows, scratch_);
      return;
    }
    const float* w = layer_.weights()[0].data<float>();
    const bool transposed = layer_.transposed();
    if (!training_ && dots_pay()) {
      gemv(x, w, y);
      return;
    }
    sgemm(false, !transposed, d_.rows, d_.outputs, d_.inner, 1.0f, x, d_.inner, w,
          transposed ? d_.outputs : d_.inner, 0.0f, y, d_.outputs);
    if (!layer_.has_bias()) return;
    const float* bias = layer_.weights()[1].data<float>();
    parallel_for(
        d_.rows,
        [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t m = begin; m < end; ++m) {
            float* row = y + m * d_.outputs;
            for (std::int64_t n = 0; n < d_.outputs; ++n) row[n] += bias[n];
          }
        },
        std::max<std::int64_t>(1, (1 << 14) / d_.outputs));
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    // A net that trains changes the weights every step: sgemm from here on rather than a new sparse
    // form each step.
    training_ = true;
    sparse_.reset();
    const float* x = inputs[0].data<float>();
    const float* dy = output_grads[0].data<float>();
    const float* w = layer_.weights()[0].data<float>();
    float* dw = weight_grads[0].data<float>();
    const bool transposed = layer_.transposed();
    if (input_grads[0].defined()) {
      sgemm(false, transposed, d_.rows, d_.inner, d_.outputs, 1.0f, dy, d_.outputs, w,
            transposed ? d_.outputs : d_.inner, 1.0f, input_grads[0].data<float>(), d_.inner);
    }
    if (transposed) {
      sgemm(true, false, d_.inner, d_.outputs, d_.rows, 1.0f, x, d_.inner, dy, d_.outputs, 1.0f, dw,
            d_.outputs);
    } else {
      sgemm(true, false, d_.outputs, d_.inner, d_.rows, 1.0f, dy, d_.outputs, x, d_.inner, 1.0f, dw,
            d_.inner);
    }
    if (!layer_.has_bias()) return;
    float* db = weight_grads[1].data<float>();
    for (std::int64_t m = 0; m < d_.rows; ++m) {
      const float* row = dy + m * d_.outputs;
      for (std::int64_t n = 0; n < d_.outputs; ++n) db[n] += row[n];
    }
  }
  bool has_fast_backward() const override { return true; }

  const char* name() const override { return sparse_ ? "sparse-codebook" : "sgemm"; }

 private:
  // A few rows (batch 1 classifiers): y = x · Wᵀ + bias as dot products over W's rows (or, with
  // transposed weights, multiply-adds along W's rows), the bias added in the same pass, threads taking
  // ranges of outputs. sgemm would pack all of W's transpose on every call (1.3M floats for
  // MobileNetV2's classifier) to multiply it by one row.
  static constexpr std::int64_t kGemvRows = 4;
  // With AVX-512, four input rows share each load of W: dot products beat sgemm's packing up to 16 rows where
  // W stays in a core's L2 (LeNet's ip1 at batch 16, 800 x 500: 0.25 ms in sgemm).
  static constexpr std::int64_t kAvx512DotRows = 16;
  static constexpr std::int64_t kAvx512DotWeightBytes = std::int64_t{2} << 20;
  bool dots_pay() const {
    if (d_.rows <= kGemvRows) return true;
    return avx512_ && !layer_.transposed() && d_.rows <= kAvx512DotRows &&
           d_.inner * d_.outputs * static_cast<std::int64_t>(sizeof(float)) <= kAvx512DotWeightBytes;
  }

  void gemv(const float* x, const float* w, float* y) const {
    const float* bias = layer_.has_bias() ? layer_.weights()[1].data<float>() : nullptr;
    const std::int64_t inner = d_.inner, outputs = d_.outputs, rows = d_.rows;
    const bool transposed = layer_.transposed();
    parallel_for(
        outputs,
        [&](std::int64_t begin, std::int64_t end) {
#if defined(__x86_64__)
          if (avx512_ && !transposed) {
            for (std::int64_t m = 0; m < rows; m += 4) {
              const float* in = x + m * inner;
              float* out = y + m * outputs;
              switch (std::min<std::int64_t>(4, rows - m)) {
                case 1:
                  row_dots_avx512<1>(in, w, inner, begin, end, bias, out, outputs);
                  break;
                case 2:
                  row_dots_avx512<2>(in, w, inner, begin, end, bias, out, outputs);
                  break;
                case 3:
                  row_dots_avx512<3>(in, w, inner, begin, end, bias, out, outputs);
                  break;
                default:
                  row_dots_avx512<4>(in, w, inner, begin, end, bias, out, outputs);
              }
            }
            return;
          }
#endif
          for (std::int64_t m = 0; m < rows; ++m) {
            const float* in = x + m * inner;
            float* out = y + m * outputs;
            if (transposed) {
              // W is inner × outputs: each input scales one row of W into the outputs.
              for (std::int64_t n = begin; n < end; ++n) out[n] = bias ? bias[n] : 0.0f;
              for (std::int64_t k = 0; k < inner; ++k) {
                const float v = in[k];
                const float* row = w + k * outputs;
                for (std::int64_t n = begin; n < end; ++n) out[n] += v * row[n];
              }
              continue;
            }
            for (std::int64_t n = begin; n < end; ++n) {
              // Sixteen independent partial sums, so the loop vectorises without reassociation.
              const float* row = w + n * inner;
              float lanes[16] = {};
              std::int64_t k = 0;
              for (; k + 16 <= inner; k += 16) {
                for (int l = 0; l < 16; ++l) lanes[l] += in[k + l] * row[k + l];
              }
              float sum = 0.0f;
              for (; k < inner; ++k) sum += in[k] * row[k];
              for (const float lane : lanes) sum += lane;
              out[n] = sum + (bias ? bias[n] : 0.0f);
            }
          }
        },
        std::max<std::int64_t>(1, (1 << 14) / std::max<std::int64_t>(1, inner * rows)));
  }

  void choose_form() {
    weights_version_ = layer_.weights()[0].version();
    sparse_.reset();
    const float* w = layer_.weights()[0].data<float>();
    if (sparse_product_wins(count_nonzeros(w, d_.outputs * d_.inner), d_.rows, d_.outputs, d_.inner)) {
      sparse_ = SparseCodebookMatrix::from_dense(w, layer_.transposed(), d_.outputs, d_.inner);
    }
  }

  const InnerProductLayer& layer_;
  InnerProductLayer::Dims d_;
  std::uint64_t weights_version_ = 0;  // of the weights the form was chosen for
  bool training_ = false;
  std::optional<SparseCodebookMatrix> sparse_;
  std::vector<float> scratch_;
  bool avx512_ = fast_gemm_uses_avx512();
};

}  // namespace

std::unique_ptr<Kernel> make_inner_product(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& ip = static_cast<const InnerProductLayer&>(layer);
  return std::make_unique<InnerProductKernel>(ip, ip.dims(inputs[0]));
}

}  // namespace espresso::cpu
