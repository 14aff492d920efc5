// Pointwise (1x1, stride 1, one group) convolutions on channels-last fp16/bf16 tensors are one GEMM: the
// N·H·W positions by C input channels times the filter's transpose. cuBLASLt runs it with the bias, a ReLU
// and a residual (its C operand) in the GEMM's own epilogue. cuDNN's legacy algorithms took 0.22 ms for
// each of MobileNetV2's 7x7 pointwise layers at batch 256 on an H100 (0.56 ms for the 16 -> 96 one at
// 112x112), where the GEMMs PyTorch's cuDNN front end picks take 0.01 to 0.26 ms
// (bench/results/2026-12-08-h100-session28.md).
#include <cublasLt.h>

#include <array>
#include <limits>
#include <memory>
#include <string>

#include "backends/cuda/check.h"
#include "backends/cuda/conv_tactics.h"
#include "backends/cuda/kernels.h"

namespace espresso::cuda {
namespace {

// The GEMM's own scratch, from the stream's shared workspace: what cuBLAS asks for on Hopper.
constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;

cublasLtHandle_t lt_handle() {
  static cublasLtHandle_t handle = [] {
    cublasLtHandle_t made = nullptr;
    ESPRESSO_CUDA_CHECK(cublasLtCreate(&made));
    return made;
  }();
  return handle;
}

// What a GEMM adds on the way out.
enum class Finish { none, bias, bias_relu };

struct Layouts {
  cublasLtMatrixLayout_t filter = nullptr, input = nullptr, output = nullptr;
};

class PointwiseNhwc final : public TypedConvTactic {
 public:
  PointwiseNhwc(const ConvProblem& p, DType dtype, StreamContext& context)
      : dtype_(dtype), context_(context), owner_(p.owner), extent_(p.out_extent()) {
    const cudaDataType_t type = cublas_type(dtype);
    const auto positions = static_cast<std::uint64_t>(p.batch * p.out_spatial());
    const auto in = static_cast<std::uint64_t>(p.in_channels),
               out = static_cast<std::uint64_t>(p.out_channels);
    // Column-major views: the filter K x C (row-major) is C x K, transposed by the GEMM; x is C x positions;
    // y is K x positions, so that the bias runs along y's rows, one per output channel.
    ESPRESSO_CUDA_CHECK(
        cublasLtMatrixLayoutCreate(&layouts_.filter, type, in, out, static_cast<std::int64_t>(in)));
    ESPRESSO_CUDA_CHECK(
        cublasLtMatrixLayoutCreate(&layouts_.input, type, in, positions, static_cast<std::int64_t>(in)));
    ESPRESSO_CUDA_CHECK(
        cublasLtMatrixLayoutCreate(&layouts_.output, type, out, positions, static_cast<std::int64_t>(out)));
    context.reserve_workspace(kWorkspaceBytes);
  }
  ~PointwiseNhwc() override {
    for (Plan& plan : plans_) {
      if (plan.desc != nullptr) cublasLtMatmulDescDestroy(plan.desc);
    }
    for (cublasLtMatrixLayout_t layout : {layouts_.filter, layouts_.input, layouts_.output}) {
      if (layout != nullptr) cublasLtMatrixLayoutDestroy(layout);
    }
  }
  PointwiseNhwc(const PointwiseNhwc&) = delete;
  PointwiseNhwc& operator=(const PointwiseNhwc&) = delete;

  // The float bias is not a type cuBLASLt's fp16/bf16 epilogues take: it follows in a pass of its own.
  void run_typed(const void* x, const void* w, const float* b, void* y) override {
    if (!gemm(Finish::none, false, x, w, nullptr, nullptr, y))
      throw DeviceError("layer '" + owner_ + "': cuBLASLt has no algorithm for this pointwise convolution");
    if (b != nullptr) channel_affine(context_, dtype_, y, nullptr, b, y, extent_);
  }
  // The bias and a ReLU in cuBLASLt's epilogue, the residual as its C operand (also in place: the Add on the
  // residual's memory); other clamps, and outputs written elsewhere, take the separate pass.
  bool can_fuse(const Epilogue& e) const override {
    const float inf = std::numeric_limits<float>::infinity();
    const bool in_place = e.destination == e.residual && e.destination_image_stride == 0;
    return (e.destination == nullptr || in_place) && (e.lo == -inf || e.lo == 0.0f) && e.hi == inf;
  }
  bool run_fused(const void* x, const void* w, const void* b, const Epilogue& e, void* y) override {
    if (b == nullptr || !can_fuse(e)) return false;
    return gemm(e.lo == 0.0f ? Finish::bias_relu : Finish::bias, e.residual != nullptr, x, w, b, e.residual,
                e.destination != nullptr ? e.destination : y);
  }
  const char* name() const override { return "pointwise-nhwc-cublaslt"; }

 private:
  struct Plan {
    bool made = false, usable = false;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };

  // y = finish(wᵀ x + (residual ? residual : 0)); false where cuBLASLt offers no algorithm for it.
  bool gemm(Finish finish, bool with_residual, const void* x, const void* w, const void* bias,
            const void* residual, void* y) {
    Plan& plan = plans_[static_cast<std::size_t>(finish)];
    if (!plan.made) prepare(plan, finish);
    if (!plan.usable) return false;
    if (finish != Finish::none)
      ESPRESSO_CUDA_CHECK(
          cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    const float one = 1.0f, beta = with_residual ? 1.0f : 0.0f;
    ESPRESSO_CUDA_CHECK(cublasLtMatmul(lt_handle(), plan.desc, &one, w, layouts_.filter, x, layouts_.input,
                                       &beta, with_residual ? residual : y, layouts_.output, y,
                                       layouts_.output, &plan.algo, context_.workspace(), kWorkspaceBytes,
                                       context_.stream()));
    return true;
  }

  void prepare(Plan& plan, Finish finish) {
    plan.made = true;
    ESPRESSO_CUDA_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t transposed = CUBLAS_OP_T;
    ESPRESSO_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transposed,
                                                       sizeof transposed));
    const cublasLtEpilogue_t epilogue = finish == Finish::bias_relu ? CUBLASLT_EPILOGUE_RELU_BIAS
                                        : finish == Finish::bias    ? CUBLASLT_EPILOGUE_BIAS
                                                                    : CUBLASLT_EPILOGUE_DEFAULT;
    ESPRESSO_CUDA_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    cublasLtMatmulPreference_t preference = nullptr;
    ESPRESSO_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    // Tensors start at 16-byte boundaries (the planner's), not at the 256 cuBLASLt assumes by default.
    const std::uint64_t workspace = kWorkspaceBytes;
    const std::uint32_t alignment = 16;
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status = [&] {
      cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
          preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace);
      for (const auto attribute :
           {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
        if (s == CUBLAS_STATUS_SUCCESS)
          s = cublasLtMatmulPreferenceSetAttribute(preference, attribute, &alignment, sizeof alignment);
      }
      if (s != CUBLAS_STATUS_SUCCESS) return s;
      return cublasLtMatmulAlgoGetHeuristic(lt_handle(), plan.desc, layouts_.filter, layouts_.input,
                                            layouts_.output, layouts_.output, preference, 1, &result, &found);
    }();
    cublasLtMatmulPreferenceDestroy(preference);
    plan.usable = status == CUBLAS_STATUS_SUCCESS && found > 0;
    if (plan.usable) plan.algo = result.algo;
  }

  DType dtype_;
  StreamContext& context_;
  std::string owner_;
  ChannelExtent extent_;
  Layouts layouts_;
  std::array<Plan, 3> plans_;  // per Finish (with or without the residual alike)
};

}  // namespace

std::unique_ptr<TypedConvTactic> make_pointwise_nhwc_conv(const ConvProblem& p, DType dtype,
                                                          StreamContext& context) {
  // Rows of whole 16-byte packs, as the alignment preference promises.
  if (!pointwise(p) || !p.channels_last || p.group != 1 || p.in_channels % 8 != 0 ||
      p.out_channels % 8 != 0 || (dtype != DType::f16 && dtype != DType::bf16))
    return nullptr;
  return std::make_unique<PointwiseNhwc>(p, dtype, context);
}

}  // namespace espresso::cuda
