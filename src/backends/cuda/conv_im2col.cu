// Convolution as im2col + cuBLAS: per image, the input is unfolded into a (C · taps) x positions
// matrix in a workspace reserved at plan time, then one strided-batched GEMM (SGEMM in fp32, tensor cores
// in fp16/bf16 at inference) multiplies every group's filters with its rows. Pointwise convolutions (1x1,
// stride 1, no padding) skip the unfolding: the input already is that matrix. The same unfolding, and col2im,
// give the backward that serves the configurations cuDNN declines; pointwise ones with one group train as
// GEMMs over the whole batch.
#include <algorithm>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/conv_unfold.h"
#include "backends/cuda/kernels.h"

namespace espresso::cuda {
// A transposed problem (a deconvolution's) may have a unit window and still differ in size, through output
// padding.
bool pointwise(const ConvProblem& p) {
  for (std::size_t a = 0; a < 3; ++a) {
    if (p.kernel[a] != 1 || p.stride[a] != 1 || p.pad[a] != 0 || p.in[a] != p.out[a]) return false;
  }
  return true;
}

namespace {

// A larger unfolded image is better served by the other tactics than by a huge workspace.
constexpr std::int64_t kMaxWorkspaceBytes = std::int64_t{512} << 20;

// The im2col workspace in elements of one image's unfolded matrix.
std::int64_t unfolded_elements(const ConvProblem& p) { return p.in_channels * p.taps() * p.out_spatial(); }

// The GEMM dimensions and strides of one image, per group (cuBLAS's int).
struct GroupGemm {
  int positions;  // output positions
  int depth;      // input channels per group · taps: a row of the unfolded matrix per (channel, tap)
  int rows;       // output channels per group
  int groups;
  long long col_stride, w_stride,
      y_stride;  // between groups: depth · positions, rows · depth, rows · positions
};

GroupGemm group_gemm(const ConvProblem& p, const ConvWindows& windows) {
  GroupGemm g{};
  g.positions = windows.out_spatial;
  g.depth = static_cast<int>(p.in_per_group() * p.taps());
  g.rows = static_cast<int>(p.out_per_group());
  g.groups = static_cast<int>(p.group);
  g.col_stride = static_cast<long long>(g.depth) * g.positions;
  g.w_stride = static_cast<long long>(g.rows) * g.depth;
  g.y_stride = static_cast<long long>(g.rows) * g.positions;
  return g;
}

// The sizes cuBLAS and the unfolding kernels index with int, and the workspace limit.
bool fits(const ConvProblem& p) {
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  return unfolded_elements(p) * static_cast<std::int64_t>(sizeof(float)) <= kMaxWorkspaceBytes &&
         p.in_spatial() <= int_max && p.out_channels * p.out_spatial() <= int_max &&
         p.in_per_group() * p.taps() <= int_max && p.group <= int_max;
}

std::shared_ptr<void> unfold_workspace(const ConvProblem& p, DType dtype, StreamContext& context) {
  return allocate(static_cast<std::size_t>(unfolded_elements(p)) * dtype_size(dtype), context.device(),
                  "the im2col workspace of layer '" + p.owner + "'");
}

// x, w and y in `dtype`: fp32 through SGEMM (FMA math); fp16 and bf16 through cublasGemmStridedBatchedEx
// on tensor cores with fp32 accumulation.
class Im2colConv final : public ConvTactic, public TypedConvTactic {
 public:
  Im2colConv(const ConvProblem& p, const ConvWindows& windows, DType dtype, StreamContext& context)
      : problem_(p),
        windows_(windows),
        gemm_(group_gemm(p, windows)),
        pointwise_(pointwise(p)),
        dtype_(dtype),
        context_(context),
        cublas_(context.cublas()) {
    if (!pointwise_) workspace_ = unfold_workspace(p, dtype, context);
  }

  void run(const float* x, const float* w, const float* b, float* y) override { run_typed(x, w, b, y); }
  void run_typed(const void* x, const void* w, const float* b, void* y) override {
    const float one = 1.0f, zero = 0.0f;
    const auto element = static_cast<std::int64_t>(dtype_size(dtype_));
    const auto* in = static_cast<const std::byte*>(x);
    auto* out = static_cast<std::byte*>(y);
    for (std::int64_t n = 0; n < problem_.batch; ++n) {
      const void* image = in + n * problem_.in_channels * windows_.in_spatial * element;
      const void* col = pointwise_ ? image : workspace_.get();
      if (!pointwise_) im2col(context_, windows_, problem_.in_channels, dtype_, image, workspace_.get());
      void* image_y = out + n * problem_.out_channels * gemm_.positions * element;
      // Column-major view: y_gᵀ (positions x rows) = col_gᵀ (positions x depth) · w_gᵀ (depth x rows).
      if (dtype_ == DType::f32) {
        ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
            cublas_, CUBLAS_OP_N, CUBLAS_OP_N, gemm_.positions, gemm_.rows, gemm_.depth, &one,
            static_cast<const float*>(col), gemm_.positions, gemm_.col_stride, static_cast<const float*>(w),
            gemm_.depth, gemm_.w_stride, &zero, static_cast<float*>(image_y), gemm_.positions, gemm_.y_stride,
            gemm_.groups));
        continue;
      }
      const cudaDataType_t type = cublas_type(dtype_);
      in_default_math(cublas_, [&] {
        return cublasGemmStridedBatchedEx(
            cublas_, CUBLAS_OP_N, CUBLAS_OP_N, gemm_.positions, gemm_.rows, gemm_.depth, &one, col, type,
            gemm_.positions, gemm_.col_stride, w, type, gemm_.depth, gemm_.w_stride, &zero, image_y, type,
            gemm_.positions, gemm_.y_stride, gemm_.groups, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      });
    }
    if (b != nullptr)
      channel_affine(context_, dtype_, y, nullptr, b, y,
                     {problem_.batch, problem_.out_channels, gemm_.positions});
  }
  const char* name() const override { return "im2col+gemm"; }

 private:
  ConvProblem problem_;
  ConvWindows windows_;
  GroupGemm gemm_;
  bool pointwise_;
  DType dtype_;
  StreamContext& context_;
  cublasHandle_t cublas_;
  std::shared_ptr<void> workspace_;
};

// One image at a time through the unfolded matrix, as the forward: the filter gradient is
// dy_g · col_gᵀ, the input gradient col2im(w_gᵀ · dy_g). Gathers throughout, so deterministic.
class GemmGradients final : public ConvGradients {
 public:
  GemmGradients(const ConvProblem& p, const ConvWindows& windows, StreamContext& context)
      : problem_(p),
        windows_(windows),
        gemm_(group_gemm(p, windows)),
        pointwise_(pointwise(p)),
        context_(context),
        cublas_(context.cublas()) {
    if (!pointwise_) workspace_ = unfold_workspace(p, DType::f32, context);
  }

  void forward_add(const float* x, const float* w, float* y) override {
    const float one = 1.0f;
    for (std::int64_t n = 0; n < problem_.batch; ++n) {
      const float* col = unfolded(x + n * problem_.in_channels * windows_.in_spatial);
      // Column-major view: y_gᵀ (positions x rows) += col_gᵀ (positions x depth) · w_gᵀ (depth x rows).
      ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_N, CUBLAS_OP_N, gemm_.positions, gemm_.rows, gemm_.depth, &one, col,
          gemm_.positions, gemm_.col_stride, w, gemm_.depth, gemm_.w_stride, &one,
          y + n * problem_.out_channels * gemm_.positions, gemm_.positions, gemm_.y_stride, gemm_.groups));
    }
  }

  void data_add(const float* w, const float* dy, float* dx) override {
    const float one = 1.0f, zero = 0.0f;
    auto* workspace = static_cast<float*>(workspace_.get());
    for (std::int64_t n = 0; n < problem_.batch; ++n) {
      float* image_grad = dx + n * problem_.in_channels * windows_.in_spatial;
      // Column-major view: dcol_gᵀ (positions x depth) = dy_gᵀ (positions x rows) · w_g (rows x depth);
      // a pointwise problem's columns are the image, so it adds there directly.
      ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_N, CUBLAS_OP_T, gemm_.positions, gemm_.depth, gemm_.rows, &one,
          dy + n * problem_.out_channels * gemm_.positions, gemm_.positions, gemm_.y_stride, w, gemm_.depth,
          gemm_.w_stride, pointwise_ ? &one : &zero, pointwise_ ? image_grad : workspace, gemm_.positions,
          gemm_.col_stride, gemm_.groups));
      if (!pointwise_) col2im(context_, windows_, problem_.in_channels, workspace, nullptr, true, image_grad);
    }
  }

  void filter_add(const float* x, const float* dy, float* dw) override {
    const float one = 1.0f;
    for (std::int64_t n = 0; n < problem_.batch; ++n) {
      const float* col = unfolded(x + n * problem_.in_channels * windows_.in_spatial);
      // Column-major view: dw_gᵀ (depth x rows) += col_g (depth x positions) · dy_gᵀ (positions x rows).
      ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_T, CUBLAS_OP_N, gemm_.depth, gemm_.rows, gemm_.positions, &one, col,
          gemm_.positions, gemm_.col_stride, dy + n * problem_.out_channels * gemm_.positions,
          gemm_.positions, gemm_.y_stride, &one, dw, gemm_.depth, gemm_.w_stride, gemm_.groups));
    }
  }

 private:
  // One image as the unfolded matrix: itself when pointwise, else im2col'd into the workspace.
  const float* unfolded(const float* image) {
    if (pointwise_) return image;
    auto* workspace = static_cast<float*>(workspace_.get());
    im2col(context_, windows_, problem_.in_channels, image, workspace);
    return workspace;
  }

  ConvProblem problem_;
  ConvWindows windows_;
  GroupGemm gemm_;
  bool pointwise_;
  StreamContext& context_;
  cublasHandle_t cublas_;
  std::shared_ptr<void> workspace_;
};

// A pointwise convolution with one group trains as whole-batch GEMMs, where the other gradients run
// one GEMM per image (cuDNN's deterministic backward algorithms are 3-6x the forward there,
// bench/results/2026-12-05-h200-serve-train-compress-vulkan.md). The filter gradient, a sum over
// images, is made per image into a workspace by one batched GEMM and summed by a GEMM with a vector
// of ones: deterministic, no atomics. In fp16 / bf16 (mixed precision training) the forward is such a
// GEMM too, the operands in that type on tensor cores, the per-image filter gradients and their sum fp32.
class PointwiseConv final : public ConvGradients, public TypedConvGradients, public TypedConvTactic {
 public:
  // `gradients`: prepare the filter gradient's sums (else only the forward runs).
  PointwiseConv(const ConvProblem& p, DType dtype, bool gradients, StreamContext& context)
      : positions_(static_cast<int>(p.out_spatial())),
        in_(static_cast<int>(p.in_channels)),
        out_(static_cast<int>(p.out_channels)),
        batch_(static_cast<int>(p.batch)),
        dtype_(dtype),
        context_(context),
        cublas_(context.cublas()) {
    if (!gradients) return;
    const std::int64_t filter = p.in_channels * p.out_channels;
    chunk_ = static_cast<int>(std::clamp<std::int64_t>(kFilterWorkspaceBytes / (filter * 4), 1, p.batch));
    // The sums live in the stream's shared workspace, which the layers use one after another.
    context.reserve_workspace(static_cast<std::size_t>(filter * chunk_) * sizeof(float));
    ones_ = allocate(static_cast<std::size_t>(chunk_) * sizeof(float), context.device(),
                     "the filter gradient sums of layer '" + p.owner + "'");
    const std::vector<float> ones(static_cast<std::size_t>(chunk_), 1.0f);
    ESPRESSO_CUDA_CHECK(cudaMemcpyAsync(ones_.get(), ones.data(), ones.size() * sizeof(float),
                                        cudaMemcpyHostToDevice, context.stream()));
    ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(context.stream()));  // before `ones` goes
  }

  // Column-major views throughout: an image x (C x positions, row-major) is xᵀ (positions x C).
  void forward_add(const float* x, const float* w, float* y) override {
    const float one = 1.0f;
    // y_nᵀ (positions x out) += x_nᵀ (positions x in) · wᵀ (in x out), every image at once.
    ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, positions_, out_, in_,
                                                  &one, x, positions_, image(in_), w, in_, 0, &one, y,
                                                  positions_, image(out_), batch_));
  }
  void run_typed(const void* x, const void* w, const float* b, void* y) override {
    typed_batched(CUBLAS_OP_N, out_, in_, x, w, 0.0f, y);
    if (b != nullptr) channel_affine(context_, dtype_, y, nullptr, b, y, {batch_, out_, positions_});
  }
  const char* name() const override { return "pointwise-gemm"; }

  void data_add(const float* w, const float* dy, float* dx) override {
    const float one = 1.0f;
    // dx_nᵀ (positions x in) += dy_nᵀ (positions x out) · w (out x in).
    ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, positions_, in_, out_,
                                                  &one, dy, positions_, image(out_), w, in_, 0, &one, dx,
                                                  positions_, image(in_), batch_));
  }
  void data_add(const void* w, const void* dy, void* dx) override {
    typed_batched(CUBLAS_OP_T, in_, out_, dy, w, 1.0f, dx);
  }

  void filter_add(const float* x, const float* dy, float* dw) override { filter_sums(x, dy, dw); }
  void filter_add(const void* x, const void* dy, float* dw) override { filter_sums(x, dy, dw); }

 private:
  // Beyond this the filter gradient is summed in several rounds of images.
  static constexpr std::int64_t kFilterWorkspaceBytes = std::int64_t{64} << 20;

  long long image(int channels) const { return static_cast<long long>(channels) * positions_; }

  // In the storage type, every image at once: c_nᵀ (positions x columns) = beta · c_nᵀ + a_nᵀ (positions x
  // depth) · op(w), w the out x in filter (wᵀ for the forward, w itself for the input gradient).
  void typed_batched(cublasOperation_t op, int columns, int depth, const void* a, const void* w, float beta,
                     void* c) {
    const float one = 1.0f;
    const cudaDataType_t type = cublas_type(dtype_);
    in_default_math(cublas_, [&] {
      return cublasGemmStridedBatchedEx(cublas_, CUBLAS_OP_N, op, positions_, columns, depth, &one, a, type,
                                        positions_, image(depth), w, type, in_, 0, &beta, c, type, positions_,
                                        image(columns), batch_, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    });
  }

  void filter_sums(const void* x, const void* dy, float* dw) {
    const float one = 1.0f, zero = 0.0f;
    auto* sums = static_cast<float*>(context_.workspace());
    const int filter = in_ * out_;
    const auto element = static_cast<long long>(dtype_size(dtype_));
    for (int first = 0; first < batch_; first += chunk_) {
      const int count = std::min(chunk_, batch_ - first);
      const auto* x_first = static_cast<const std::byte*>(x) + first * image(in_) * element;
      const auto* dy_first = static_cast<const std::byte*>(dy) + first * image(out_) * element;
      // Per image: dw_nᵀ (in x out) = x_n (in x positions) · dy_nᵀ (positions x out).
      if (dtype_ == DType::f32) {
        ESPRESSO_CUDA_CHECK(
            cublasSgemmStridedBatched(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, in_, out_, positions_, &one,
                                      reinterpret_cast<const float*>(x_first), positions_, image(in_),
                                      reinterpret_cast<const float*>(dy_first), positions_, image(out_),
                                      &zero, sums, in_, filter, count));
      } else {
        const cudaDataType_t type = cublas_type(dtype_);
        in_default_math(cublas_, [&] {
          return cublasGemmStridedBatchedEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, in_, out_, positions_, &one,
                                            x_first, type, positions_, image(in_), dy_first, type, positions_,
                                            image(out_), &zero, sums, CUDA_R_32F, in_, filter, count,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        });
      }
      // dw += Σ_n dw_n: the sums (filter x count) times a vector of ones (count x 1).
      ESPRESSO_CUDA_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, filter, 1, count, &one, sums, filter,
                                      static_cast<const float*>(ones_.get()), count, &one, dw, filter));
    }
  }

  int positions_, in_, out_, batch_, chunk_ = 1;
  DType dtype_;
  StreamContext& context_;
  cublasHandle_t cublas_;
  std::shared_ptr<void> ones_;
};

bool whole_batch_pointwise(const ConvProblem& p) {
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  return pointwise(p) && p.group == 1 && p.batch * p.in_channels * p.in_spatial() <= int_max &&
         p.batch * p.out_channels * p.out_spatial() <= int_max;
}

}  // namespace

std::unique_ptr<ConvGradients> make_pointwise_gradients(const ConvProblem& p, StreamContext& context) {
  if (!whole_batch_pointwise(p)) return nullptr;
  return std::make_unique<PointwiseConv>(p, DType::f32, true, context);
}

std::unique_ptr<TypedConvTactic> make_pointwise_typed_conv(const ConvProblem& p, DType dtype,
                                                           StreamContext& context) {
  if (!whole_batch_pointwise(p)) return nullptr;
  return std::make_unique<PointwiseConv>(p, dtype, false, context);
}

std::unique_ptr<TypedConvGradients> make_pointwise_typed_gradients(const ConvProblem& p, DType dtype,
                                                                   StreamContext& context) {
  if (!whole_batch_pointwise(p)) return nullptr;
  return std::make_unique<PointwiseConv>(p, dtype, true, context);
}

std::unique_ptr<ConvTactic> make_im2col_conv(const ConvProblem& p, StreamContext& context) {
  ConvWindows windows{};
  if (!fits(p) || !conv_windows(p, windows)) return nullptr;
  return std::make_unique<Im2colConv>(p, windows, DType::f32, context);
}

std::unique_ptr<TypedConvTactic> make_im2col_typed_conv(const ConvProblem& p, DType dtype,
                                                        StreamContext& context) {
  ConvWindows windows{};
  if (!fits(p) || !conv_windows(p, windows)) return nullptr;
  return std::make_unique<Im2colConv>(p, windows, dtype, context);
}

std::unique_ptr<ConvGradients> make_gemm_gradients(const ConvProblem& p, StreamContext& context) {
  ConvWindows windows{};
  if (!fits(p) || !conv_windows(p, windows)) return nullptr;
  return std::make_unique<GemmGradients>(p, windows, context);
}

}  // namespace espresso::cuda
