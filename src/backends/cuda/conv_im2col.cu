// Convolution as im2col + cuBLAS: per image, the input is unfolded into a (C · taps) x positions
// matrix in a workspace reserved at plan time, then one strided-batched SGEMM multiplies every
// group's filters with its rows. Pointwise convolutions (1x1, stride 1, no padding) skip the
// unfolding: the input already is that matrix.
#include <limits>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/conv_tactics.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;
// A larger unfolded image is better served by the other tactics than by a huge workspace.
constexpr std::int64_t kMaxWorkspaceBytes = std::int64_t{512} << 20;

struct Unfold {
  int in[3], out[3], kernel[3], stride[3], pad[3], dilation[3];
  int taps, in_spatial, out_spatial;
  long long total;  // channels * taps * out_spatial
};

__global__ void im2col(Unfold u, const float* __restrict__ x, float* __restrict__ col) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < u.total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int position = static_cast<int>(i % u.out_spatial);
    const long long row = i / u.out_spatial;
    const int tap = static_cast<int>(row % u.taps);
    const long long channel = row / u.taps;
    const int od = position / (u.out[1] * u.out[2]);
    const int oh = position / u.out[2] % u.out[1];
    const int ow = position % u.out[2];
    const int kd = tap / (u.kernel[1] * u.kernel[2]);
    const int kh = tap / u.kernel[2] % u.kernel[1];
    const int kw = tap % u.kernel[2];
    const int id = od * u.stride[0] - u.pad[0] + kd * u.dilation[0];
    const int ih = oh * u.stride[1] - u.pad[1] + kh * u.dilation[1];
    const int iw = ow * u.stride[2] - u.pad[2] + kw * u.dilation[2];
    const bool inside = id >= 0 && id < u.in[0] && ih >= 0 && ih < u.in[1] && iw >= 0 && iw < u.in[2];
    col[i] = inside ? x[channel * u.in_spatial + (id * u.in[1] + ih) * u.in[2] + iw] : 0.0f;
  }
}

class Im2colConv final : public ConvTactic {
 public:
  Im2colConv(const ConvProblem& p, const Unfold& unfold, bool pointwise, StreamContext& context)
      : problem_(p), unfold_(unfold), pointwise_(pointwise), context_(context), cublas_(context.cublas()) {
    if (!pointwise_) {
      workspace_ = allocate(static_cast<std::size_t>(unfold_.total) * sizeof(float), context.device(),
                            "the im2col workspace of layer '" + p.owner + "'");
    }
  }

  void run(const float* x, const float* w, const float* b, float* y) override {
    const int positions = unfold_.out_spatial;
    const int depth = static_cast<int>(problem_.in_per_group() * problem_.taps());
    const int rows = static_cast<int>(problem_.out_per_group());
    const float one = 1.0f, zero = 0.0f;
    auto* workspace = static_cast<float*>(workspace_.get());
    for (std::int64_t n = 0; n < problem_.batch; ++n) {
      const float* image = x + n * problem_.in_channels * unfold_.in_spatial;
      const float* col = pointwise_ ? image : workspace;
      if (!pointwise_) {
        im2col<<<elementwise_blocks(context_, unfold_.total, kThreads), kThreads, 0, context_.stream()>>>(
            unfold_, image, workspace);
        ESPRESSO_CUDA_CHECK(cudaGetLastError());
      }
      // Column-major view: y_gᵀ (positions x rows) = col_gᵀ (positions x depth) · w_gᵀ (depth x rows).
      ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_N, CUBLAS_OP_N, positions, rows, depth, &one, col, positions,
          static_cast<long long>(depth) * positions, w, depth, static_cast<long long>(rows) * depth, &zero,
          y + n * problem_.out_channels * positions, positions, static_cast<long long>(rows) * positions,
          static_cast<int>(problem_.group)));
    }
    if (b != nullptr) {
      channel_affine(context_, y, nullptr, b, y, {problem_.batch, problem_.out_channels, positions});
    }
  }
  const char* name() const override { return "im2col+gemm"; }

 private:
  ConvProblem problem_;
  Unfold unfold_;
  bool pointwise_;
  StreamContext& context_;
  cublasHandle_t cublas_;
  std::shared_ptr<void> workspace_;
};

}  // namespace

std::unique_ptr<ConvTactic> make_im2col_conv(const ConvProblem& p, StreamContext& context) {
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  const std::int64_t total = p.in_channels * p.taps() * p.out_spatial();
  if (total * static_cast<std::int64_t>(sizeof(float)) > kMaxWorkspaceBytes || p.in_spatial() > int_max ||
      p.out_channels * p.out_spatial() > int_max || p.group > int_max) {
    return nullptr;
  }
  bool pointwise = true;
  Unfold u{};
  for (int a = 0; a < 3; ++a) {
    u.in[a] = static_cast<int>(p.in[a]);
    u.out[a] = static_cast<int>(p.out[a]);
    u.kernel[a] = static_cast<int>(p.kernel[a]);
    u.stride[a] = static_cast<int>(p.stride[a]);
    u.pad[a] = static_cast<int>(p.pad[a]);
    u.dilation[a] = static_cast<int>(p.dilation[a]);
    pointwise = pointwise && p.kernel[a] == 1 && p.stride[a] == 1 && p.pad[a] == 0;
  }
  u.taps = static_cast<int>(p.taps());
  u.in_spatial = static_cast<int>(p.in_spatial());
  u.out_spatial = static_cast<int>(p.out_spatial());
  u.total = total;
  return std::make_unique<Im2colConv>(p, u, pointwise, context);
}

}  // namespace espresso::cuda
