// Pointwise (1x1, stride 1, one group) convolutions on channels-last fp16/bf16 tensors are one GEMM: the
// N·H·W positions by C input channels times the filter's transpose. cuBLASLt runs it with the bias, a ReLU
// and a residual (its C operand) in the GEMM's own epilogue. cuDNN's legacy algorithms took 0.22 ms for
// each of MobileNetV2's 7x7 pointwise layers at batch 256 on an H100 (0.56 ms for the 16 -> 96 one at
// 112x112), where the GEMMs PyTorch's cuDNN front end picks take 0.01 to 0.26 ms
// (bench/results/2026-12-08-h100-session28.md).
#include <cublasLt.h>

#include <array>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>

#include "backends/cuda/check.h"
#include "backends/cuda/conv_tactics.h"
#include "backends/cuda/kernels.h"

namespace espresso::cuda {
namespace {

// The GEMM's own scratch, from the stream's shared workspace: what cuBLAS asks for on Hopper.
constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;

// One handle per device for the process (cuBLASLt's handles hold no stream), made with the first kernel
// there; a DeviceError where cuBLASLt cannot be loaded.
cublasLtHandle_t lt_handle(int device) {
  static std::mutex mutex;
  static std::map<int, cublasLtHandle_t> handles;
  const std::lock_guard lock(mutex);
  auto found = handles.find(device);
  if (found != handles.end()) return found->second;
  DeviceGuard guard(device);
  cublasLtHandle_t made = nullptr;
  ESPRESSO_CUDA_CHECK(cublasLtCreate(&made));
  return handles[device] = made;
}

template <typename Handle, auto destroy>
struct Destroyer {
  void operator()(Handle handle) const { destroy(handle); }
};
using Layout = std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>,
                               Destroyer<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>>;
using MatmulDesc = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>,
                                   Destroyer<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>>;
using Preference = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>,
                                   Destroyer<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>>;

Layout make_layout(cudaDataType_t type, std::int64_t rows, std::int64_t columns) {
  cublasLtMatrixLayout_t layout = nullptr;
  ESPRESSO_CUDA_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<std::uint64_t>(rows),
                                                 static_cast<std::uint64_t>(columns), rows));
  return Layout(layout);
}

// What a GEMM adds on the way out.
enum class Finish { none, bias, bias_relu };

class PointwiseNhwc final : public TypedConvTactic {
 public:
  // Column-major views: the filter K x C (row-major) is C x K, transposed by the GEMM; x is C x positions;
  // y is K x positions, so that the bias runs along y's rows, one per output channel.
  PointwiseNhwc(const ConvProblem& p, DType dtype, StreamContext& context)
      : dtype_(dtype),
        context_(context),
        handle_(lt_handle(context.device().index)),
        extent_(p.out_extent()),
        filter_(make_layout(cublas_type(dtype), p.in_channels, p.out_channels)),
        input_(make_layout(cublas_type(dtype), p.in_channels, p.batch * p.out_spatial())),
        output_(make_layout(cublas_type(dtype), p.out_channels, p.batch * p.out_spatial())) {
    for (Finish finish : {Finish::none, Finish::bias, Finish::bias_relu}) prepare(finish);
    context.reserve_workspace(kWorkspaceBytes);
  }

  // Whether cuBLASLt has an algorithm for the plain product (else cuDNN takes the layer).
  bool usable() const { return plans_[0].desc != nullptr; }

  // cuBLASLt's fp16/bf16 epilogues take a bias of the output's type: the float one follows in a pass.
  void run_typed(const void* x, const void* w, const float* b, void* y) override {
    gemm(Finish::none, x, w, nullptr, nullptr, y);
    if (b != nullptr) channel_affine(context_, dtype_, y, nullptr, b, y, extent_);
  }
  // The bias and a ReLU in cuBLASLt's epilogue, the residual as its C operand (also in place: the Add on the
  // residual's memory); other clamps, and outputs written elsewhere, take the separate pass. So does the Add
  // in place on this layer's own input (y = x + conv(x)): the GEMM would overwrite x while other blocks
  // still read it.
  bool can_fuse(const Epilogue& e) const override {
    const float inf = std::numeric_limits<float>::infinity();
    const bool in_place = e.destination == e.residual && e.destination_image_stride == 0;
    return (e.destination == nullptr || in_place) && (e.lo == -inf || e.lo == 0.0f) && e.hi == inf;
  }
  bool run_fused(const void* x, const void* w, const void* b, const Epilogue& e, void* y) override {
    const Finish finish = e.lo == 0.0f ? Finish::bias_relu : Finish::bias;
    if (b == nullptr || !can_fuse(e) || e.destination == x || !plans_[static_cast<std::size_t>(finish)].desc)
      return false;
    gemm(finish, x, w, b, e.residual, e.destination != nullptr ? e.destination : y);
    return true;
  }
  const char* name() const override { return "pointwise-nhwc-cublaslt"; }

 private:
  struct Plan {
    MatmulDesc desc;  // null where cuBLASLt offers no algorithm
    cublasLtMatmulAlgo_t algo{};
  };

  // y = finish(wᵀ x + residual), the residual (y's layout) optional.
  void gemm(Finish finish, const void* x, const void* w, const void* bias, const void* residual, void* y) {
    Plan& plan = plans_[static_cast<std::size_t>(finish)];
    if (finish != Finish::none) {
      ESPRESSO_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan.desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                         &bias, sizeof bias));
    }
    const float one = 1.0f, beta = residual != nullptr ? 1.0f : 0.0f;
    ESPRESSO_CUDA_CHECK(cublasLtMatmul(handle_, plan.desc.get(), &one, w, filter_.get(), x, input_.get(),
                                       &beta, residual != nullptr ? residual : y, output_.get(), y,
                                       output_.get(), &plan.algo, context_.workspace(), kWorkspaceBytes,
                                       context_.stream()));
  }

  // cuBLASLt's first algorithm by its heuristic for this finish, if any (with or without the residual
  // alike: it only changes beta).
  void prepare(Finish finish) {
    cublasLtMatmulDesc_t made = nullptr;
    ESPRESSO_CUDA_CHECK(cublasLtMatmulDescCreate(&made, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    MatmulDesc desc(made);
    const cublasOperation_t transposed = CUBLAS_OP_T;
    ESPRESSO_CUDA_CHECK(cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_TRANSA, &transposed,
                                                       sizeof transposed));
    const cublasLtEpilogue_t epilogue = finish == Finish::bias_relu ? CUBLASLT_EPILOGUE_RELU_BIAS
                                        : finish == Finish::bias    ? CUBLASLT_EPILOGUE_BIAS
                                                                    : CUBLASLT_EPILOGUE_DEFAULT;
    ESPRESSO_CUDA_CHECK(cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                                       sizeof epilogue));
    cublasLtMatmulPreference_t preference_made = nullptr;
    ESPRESSO_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&preference_made));
    Preference preference(preference_made);
    const std::uint64_t workspace = kWorkspaceBytes;
    ESPRESSO_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(
        preference.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace));
    // Tensors start at 16-byte boundaries at least (rows of whole 16-byte packs), not at the 256 cuBLASLt
    // assumes by default.
    const std::uint32_t alignment = 16;
    for (const auto attribute :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      ESPRESSO_CUDA_CHECK(
          cublasLtMatmulPreferenceSetAttribute(preference.get(), attribute, &alignment, sizeof alignment));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(handle_, desc.get(), filter_.get(), input_.get(), output_.get(),
                                       output_.get(), preference.get(), 1, &result, &found);
    if (status != CUBLAS_STATUS_SUCCESS || found == 0) return;
    Plan& plan = plans_[static_cast<std::size_t>(finish)];
    plan.desc = std::move(desc);
    plan.algo = result.algo;
  }

  DType dtype_;
  StreamContext& context_;
  cublasLtHandle_t handle_;
  ChannelExtent extent_;
  Layout filter_, input_, output_;
  std::array<Plan, 3> plans_;  // per Finish
};

}  // namespace

std::unique_ptr<TypedConvTactic> make_pointwise_nhwc_conv(const ConvProblem& p, DType dtype,
                                                          StreamContext& context) {
  // Rows of whole 16-byte packs, as the alignment preference promises.
  if (!pointwise(p) || !p.channels_last || p.group != 1 || p.in_channels % 8 != 0 ||
      p.out_channels % 8 != 0 || (dtype != DType::f16 && dtype != DType::bf16))
    return nullptr;
  try {
    auto tactic = std::make_unique<PointwiseNhwc>(p, dtype, context);
    if (tactic->usable()) return tactic;
  } catch (const DeviceError&) {  // cuBLASLt not loadable, or declining the shapes: cuDNN's
  }
  return nullptr;
}

}  // namespace espresso::cuda
