// Deconvolution on the GPU as GEMM + col2im: per image, one strided-batched SGEMM over the groups
// multiplies the transposed filters with the input into a (C_out · taps) x input-positions
// workspace; col2im then gathers, for each output element, the workspace entries that land on it
// (no atomics, so results are deterministic) and adds the bias. Lifted to three spatial axes like
// the convolutions, so output padding, dilation and groups need no special cases.
//
// A deconvolution is the input gradient of the convolution it transposes, which reads the
// deconvolution's output and yields its input with the same filters; so the backward is that
// convolution's forward (input gradient) and filter gradient, from conv_tactics.h.
#include <limits>
#include <utility>

#include "backends/cuda/channel_sum.h"
#include "backends/cuda/conv_unfold.h"
#include "backends/cuda/kernels.h"
#include "layers/deconvolution.h"

namespace espresso::cuda {
namespace {

constexpr std::int64_t kMaxWorkspaceBytes = std::int64_t{512} << 20;
constexpr unsigned kBackwardPasses = kForwardPass | kFilterPass;

// The convolution whose input gradient this deconvolution computes.
ConvProblem transposed(const ConvProblem& deconv) {
  ConvProblem conv = deconv;
  std::swap(conv.in, conv.out);
  std::swap(conv.in_channels, conv.out_channels);
  return conv;
}

class DeconvolutionKernel final : public CudaKernel {
 public:
  DeconvolutionKernel(const ConvProblem& p, const ConvWindows& windows,
                      std::unique_ptr<ConvGradients> gradients, const float* weights, const float* bias,
                      StreamContext& context)
      : CudaKernel(context),
        problem_(p),
        windows_(windows),
        gradients_(std::move(gradients)),
        weights_(weights),
        bias_(bias),
        cublas_(context.cublas()),
        workspace_(allocate(
            static_cast<std::size_t>(p.out_channels * windows.taps * windows.out_spatial) * sizeof(float),
            context.device(), "the col2im workspace of layer '" + p.owner + "'")) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    auto* col = static_cast<float*>(workspace_.get());
    const int positions = windows_.out_spatial;
    const int rows = static_cast<int>(problem_.out_per_group()) * windows_.taps;
    const int depth = static_cast<int>(problem_.in_per_group());
    const float one = 1.0f, zero = 0.0f;
    for (std::int64_t n = 0; n < problem_.batch; ++n) {
      // Column-major view: colᵀ (positions x rows) = x_gᵀ (positions x depth) · w_g (depth x rows).
      ESPRESSO_CUDA_CHECK(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_N, CUBLAS_OP_T, positions, rows, depth, &one,
          x + n * problem_.in_channels * positions, positions, static_cast<long long>(depth) * positions,
          weights_, rows, static_cast<long long>(depth) * rows, &zero, col, positions,
          static_cast<long long>(rows) * positions, static_cast<int>(problem_.group)));
      col2im(context_, windows_, problem_.out_channels, col, bias_, false,
             y + n * problem_.out_channels * windows_.in_spatial);
    }
  }

  void backward(const Layer& layer, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    // Prepared here only outside training (gradient checks): training nets prepare it with the
    // kernel, since they may be capturing a CUDA graph now.
    if (!gradients_) {
      gradients_ = make_conv_gradients(transposed(problem_), kBackwardPasses, context_);
      if (!gradients_) {
        throw UnsupportedError(
            "layer '" + layer.name() + "' (" + layer.type() +
            "): neither cuDNN nor im2col can run this deconvolution's backward on the GPU");
      }
    }
    // In the transposed convolution, dy is the input and x the output gradient.
    const float* dy = output_grads[0].data<float>();
    if (input_grads[0].defined()) gradients_->forward_add(dy, weights_, input_grads[0].data<float>());
    if (weight_grads[0].defined())
      gradients_->filter_add(dy, inputs[0].data<float>(), weight_grads[0].data<float>());
    if (bias_ != nullptr && weight_grads[1].defined()) {
      add_channel_sums(context_, dy, weight_grads[1].data<float>(),
                       {problem_.batch, problem_.out_channels, problem_.out_spatial()});
    }
  }

  const char* name() const override { return "gemm+col2im"; }

 private:
  ConvProblem problem_;
  ConvWindows windows_;  // of the transposed convolution: in is this layer's output
  std::unique_ptr<ConvGradients> gradients_;
  const float* weights_;
  const float* bias_;
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
  ConvWindows windows{};
  if (workspace * static_cast<std::int64_t>(sizeof(float)) > kMaxWorkspaceBytes ||
      p.out_channels * p.out_spatial() > int_max || p.in_channels * p.in_spatial() > int_max ||
      !conv_windows(transposed(p), windows)) {
    return nullptr;
  }
  std::unique_ptr<ConvGradients> gradients;
  if (layer.training()) {
    gradients = make_conv_gradients(transposed(p), kBackwardPasses, context);
    if (!gradients) return nullptr;
  }
  const std::string owner = "layer '" + layer.name() + "'";
  const float* weights = context.device_weights(layer.weights()[0], owner).data<float>();
  const float* bias =
      deconv.has_bias() ? context.device_weights(layer.weights()[1], owner).data<float>() : nullptr;
  return std::make_unique<DeconvolutionKernel>(p, windows, std::move(gradients), weights, bias, context);
}

}  // namespace espresso::cuda
