// Deconvolution on the GPU as GEMM + col2im: per image, one strided-batched SGEMM over the groups
// multiplies the transposed filters with the input into a (C_out · taps) x input-positions
// workspace; col2im then gathers, for each output element, the workspace entries that land on it
// (no atomics, so results are deterministic) and adds the bias. Lifted to three spatial axes like
// the convolutions, so output padding, dilation and groups need no special cases.
#include <limits>

#include "backends/cuda/conv_tactics.h"
#include "backends/cuda/kernels.h"
#include "layers/deconvolution.h"

namespace espresso::cuda {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMaxWorkspaceBytes = std::int64_t{512} << 20;

struct Fold {
  int in[3], out[3], kernel[3], stride[3], pad[3], dilation[3];
  int taps, in_spatial, out_spatial;
  long long total;  // out_channels * out_spatial: one image's output
};

__global__ void col2im(Fold f, const float* __restrict__ col, const float* __restrict__ bias,
                       float* __restrict__ y) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < f.total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int position = static_cast<int>(i % f.out_spatial);
    const long long channel = i / f.out_spatial;
    const int o[3] = {position / (f.out[1] * f.out[2]), position / f.out[2] % f.out[1], position % f.out[2]};
    float sum = bias != nullptr ? bias[channel] : 0.0f;
    const float* rows = col + channel * f.taps * f.in_spatial;
    for (int kd = 0; kd < f.kernel[0]; ++kd) {
      const int td = o[0] + f.pad[0] - kd * f.dilation[0];
      if (td < 0 || td % f.stride[0] != 0 || td / f.stride[0] >= f.in[0]) continue;
      for (int kh = 0; kh < f.kernel[1]; ++kh) {
        const int th = o[1] + f.pad[1] - kh * f.dilation[1];
        if (th < 0 || th % f.stride[1] != 0 || th / f.stride[1] >= f.in[1]) continue;
        for (int kw = 0; kw < f.kernel[2]; ++kw) {
          const int tw = o[2] + f.pad[2] - kw * f.dilation[2];
          if (tw < 0 || tw % f.stride[2] != 0 || tw / f.stride[2] >= f.in[2]) continue;
          const int tap = (kd * f.kernel[1] + kh) * f.kernel[2] + kw;
          const int source = (td / f.stride[0] * f.in[1] + th / f.stride[1]) * f.in[2] + tw / f.stride[2];
          sum += rows[static_cast<long long>(tap) * f.in_spatial + source];
        }
      }
    }
    y[i] = sum;
  }
}

class DeconvolutionKernel final : public Kernel {
 public:
  DeconvolutionKernel(const ConvProblem& p, const Fold& fold, const float* weights, const float* bias,
                      StreamContext& context)
      : problem_(p),
        fold_(fold),
        weights_(weights),
        bias_(bias),
        context_(context),
        cublas_(context.cublas()),
        workspace_(
            allocate(static_cast<std::size_t>(p.out_channels * fold.taps * fold.in_spatial) * sizeof(float),
                     context.device(), "the col2im workspace of layer '" + p.owner + "'")) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    auto* col = static_cast<float*>(workspace_.get());
    const int positions = fold_.in_spatial;
    const int rows = static_cast<int>(problem_.out_per_group()) * fold_.taps;
    const int depth = static_cast<int>(problem_.in_per_group());
    const float one = 1.0f, zero = 0.0f;
    for (std::int64_t n = 0; n < problem_.batch; ++n) {
      // Column-major view: colᵀ (positions x rows) = x_gᵀ (positions x depth) · w_g (depth x rows).
      ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_N, CUBLAS_OP_T, positions, rows, depth, &one,
          x + n * problem_.in_channels * positions, positions, static_cast<long long>(depth) * positions,
          weights_, rows, static_cast<long long>(depth) * rows, &zero, col, positions,
          static_cast<long long>(rows) * positions, static_cast<int>(problem_.group)));
      col2im<<<elementwise_blocks(context_, fold_.total, kThreads), kThreads, 0, context_.stream()>>>(
          fold_, col, bias_, y + n * fold_.total);
      ESPRESSO_CUDA_CHECK(cudaGetLastError());
    }
  }
  const char* name() const override { return "gemm+col2im"; }

 private:
  ConvProblem problem_;
  Fold fold_;
  const float* weights_;
  const float* bias_;
  StreamContext& context_;
  cublasHandle_t cublas_;
  std::shared_ptr<void> workspace_;
};

}  // namespace

std::unique_ptr<Kernel> make_deconvolution(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context) {
  const auto& deconv = static_cast<const DeconvolutionLayer&>(layer);
  ConvProblem p;
  if (!lift_conv(deconv.geometry(inputs[0]), deconv.has_bias(), layer.name(), p)) return nullptr;
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  const std::int64_t workspace = p.out_channels * p.taps() * p.in_spatial();
  if (workspace * static_cast<std::int64_t>(sizeof(float)) > kMaxWorkspaceBytes ||
      p.out_channels * p.out_spatial() > int_max || p.in_channels * p.in_spatial() > int_max) {
    return nullptr;
  }
  Fold f{};
  for (int a = 0; a < 3; ++a) {
    f.in[a] = static_cast<int>(p.in[a]);
    f.out[a] = static_cast<int>(p.out[a]);
    f.kernel[a] = static_cast<int>(p.kernel[a]);
    f.stride[a] = static_cast<int>(p.stride[a]);
    f.pad[a] = static_cast<int>(p.pad[a]);
    f.dilation[a] = static_cast<int>(p.dilation[a]);
  }
  f.taps = static_cast<int>(p.taps());
  f.in_spatial = static_cast<int>(p.in_spatial());
  f.out_spatial = static_cast<int>(p.out_spatial());
  f.total = p.out_channels * p.out_spatial();
  const std::string owner = "layer '" + layer.name() + "'";
  const float* weights = context.device_weights(layer.weights()[0], owner).data<float>();
  const float* bias =
      deconv.has_bias() ? context.device_weights(layer.weights()[1], owner).data<float>() : nullptr;
  return std::make_unique<DeconvolutionKernel>(p, f, weights, bias, context);
}

}  // namespace espresso::cuda
