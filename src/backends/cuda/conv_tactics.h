// Convolution on the GPU comes in tactics: cuDNN, im2col + cuBLAS, and our own implicit GEMM. Each
// is prepared once per layer and input shape (descriptors, algorithm, workspace) and declines, by
// returning nullptr, the configurations it cannot run; convolution.cu picks among them.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/context.h"
#include "layers/convolution.h"

namespace espresso::cuda {

// The spatial axes a tactic handles; more declines, fewer are lifted with leading unit axes.
constexpr int kMaxConvAxes = 3;

// A convolution lifted to exactly three spatial axes (depth, height, width): 1D and 2D problems
// get leading axes of size 1 with unit windows, so one code path serves every rank.
struct ConvProblem {
  std::int64_t batch = 0, in_channels = 0, out_channels = 0, group = 1;
  int axes = 0;  // the layer's own number of spatial axes
  std::array<std::int64_t, 3> in{1, 1, 1}, out{1, 1, 1}, kernel{1, 1, 1}, stride{1, 1, 1}, pad{0, 0, 0},
      dilation{1, 1, 1};
  bool bias = false;
  // x and y stored N, H, W, C and the filter K, R, S, C (2-D problems of channels-last plans; cuDNN only).
  bool channels_last = false;
  std::string owner;  // the layer's name, for error messages and allocations

  std::int64_t in_spatial() const { return in[0] * in[1] * in[2]; }
  std::int64_t out_spatial() const { return out[0] * out[1] * out[2]; }
  std::int64_t taps() const { return kernel[0] * kernel[1] * kernel[2]; }
  std::int64_t in_per_group() const { return in_channels / group; }
  std::int64_t out_per_group() const { return out_channels / group; }
  std::int64_t macs() const { return batch * out_spatial() * out_channels * in_per_group() * taps(); }
  // y's channels as channel_affine and channel_epilogue walk them.
  ChannelExtent out_extent() const {
    return channels_last ? ChannelExtent{batch * out_spatial(), out_channels, 1}
                         : ChannelExtent{batch, out_channels, out_spatial()};
  }
};

// Whether the input already is the unfolded matrix: a unit window, stride 1, no padding, sizes kept.
bool pointwise(const ConvProblem& problem);

// Lifts a resolved geometry; returns false when it has more than kMaxConvAxes spatial axes.
bool lift_conv(const ConvGeometry& g, bool bias, const std::string& owner, ConvProblem& problem);

class ConvTactic {
 public:
  virtual ~ConvTactic() = default;
  // y = conv(x, w) + b on the context's stream; `b` is null without bias. Never allocates.
  virtual void run(const float* x, const float* w, const float* b, float* y) = 0;
  virtual const char* name() const = 0;
};

std::unique_ptr<ConvTactic> make_cudnn_conv(const ConvProblem& problem, StreamContext& context);

// A forward in another storage type (fp16, bf16): x, w and y in that type, the bias b
// (null without) in fp32, products accumulated in fp32 on tensor cores.
class TypedConvTactic {
 public:
  virtual ~TypedConvTactic() = default;
  virtual void run_typed(const void* x, const void* w, const float* b, void* y) = 0;
  // Whether run_fused can apply this epilogue (given a bias).
  virtual bool can_fuse(const Epilogue& /*epilogue*/) const { return false; }
  // y = the epilogue applied to conv(x, w) + b in one pass, `b` in the storage type; false, having done
  // nothing, where this tactic cannot (then run_typed and channel_epilogue).
  virtual bool run_fused(const void* /*x*/, const void* /*w*/, const void* /*b*/,
                         const Epilogue& /*epilogue*/, void* /*y*/) {
    return false;
  }
  // Clamps x to [lo, hi] as it reads it from now on (Kernel::fuse_input_clamp); false where it cannot.
  virtual bool clamp_input(float /*lo*/, float /*hi*/) { return false; }
  virtual const char* name() const = 0;
};

// cuDNN's, or nullptr where it declines the problem in `dtype`.
std::unique_ptr<TypedConvTactic> make_cudnn_typed_conv(const ConvProblem& problem, DType dtype,
                                                       StreamContext& context);
// Our depthwise kernel for channels-last fp16/bf16 problems whose channels come in eights, given the
// K, R, S, 1 filter in `dtype` (read once, at construction), or nullptr.
std::unique_ptr<TypedConvTactic> make_depthwise_nhwc_conv(const ConvProblem& problem, DType dtype,
                                                          const void* filter, StreamContext& context);
// cuBLASLt's GEMM for channels-last fp16/bf16 pointwise problems (1x1, stride 1, one group, channels in
// eights), or nullptr.
std::unique_ptr<TypedConvTactic> make_pointwise_nhwc_conv(const ConvProblem& problem, DType dtype,
                                                          StreamContext& context);
std::unique_ptr<ConvTactic> make_im2col_conv(const ConvProblem& problem, StreamContext& context);
// The same in `dtype` (f16, bf16: tensor-core GEMMs with fp32 accumulation).
std::unique_ptr<TypedConvTactic> make_im2col_typed_conv(const ConvProblem& problem, DType dtype,
                                                        StreamContext& context);
std::unique_ptr<ConvTactic> make_implicit_conv(const ConvProblem& problem, StreamContext& context);

// The products of a convolution that training needs, each ADDING into its result on the context's
// stream: the input gradient and the filter gradient (a convolution's backward), and the forward
// itself (a deconvolution's input gradient, since a deconvolution is a transposed convolution).
// Prepared once (descriptors, algorithms, workspace) for the passes asked for; never allocates after.
enum ConvPass : unsigned { kForwardPass = 1u, kDataPass = 2u, kFilterPass = 4u };

class ConvGradients {
 public:
  virtual ~ConvGradients() = default;
  // y += conv(x, w); needs kForwardPass.
  virtual void forward_add(const float* x, const float* w, float* y) = 0;
  // dx += the gradient of conv(x, w) with respect to x, for output gradient dy; needs kDataPass.
  virtual void data_add(const float* w, const float* dy, float* dx) = 0;
  // dw += the gradient of conv(x, w) with respect to w, for output gradient dy; needs kFilterPass.
  virtual void filter_add(const float* x, const float* dy, float* dw) = 0;
};

// The same in fp16 or bf16 (mixed precision training), products accumulated in fp32 on tensor cores:
// x, w, dy and dx in that type, the filter gradient dw fp32.
class TypedConvGradients {
 public:
  virtual ~TypedConvGradients() = default;
  virtual void data_add(const void* w, const void* dy, void* dx) = 0;
  virtual void filter_add(const void* x, const void* dy, float* dw) = 0;
};

// cuDNN, or nullptr where it declines the problem.
std::unique_ptr<ConvGradients> make_cudnn_gradients(const ConvProblem& problem, unsigned passes,
                                                    StreamContext& context);
std::unique_ptr<TypedConvGradients> make_cudnn_typed_gradients(const ConvProblem& problem, DType dtype,
                                                               StreamContext& context);
// cuDNN's timed backward (data and filter passes) in `dtype`, in milliseconds, without keeping anything
// but the timing, its workspaces bounded as for a layer of a `plan_dtype` training plan; 0 where cuDNN
// declines the problem or the passes were not timed.
float cudnn_backward_ms(const ConvProblem& problem, DType dtype, DType plan_dtype, StreamContext& context);
// im2col / col2im + cuBLAS, or nullptr where its workspace or int indices would not fit.
std::unique_ptr<ConvGradients> make_gemm_gradients(const ConvProblem& problem, StreamContext& context);
// Whole-batch cuBLAS GEMMs for a pointwise convolution (1x1, stride 1, no padding) with one group, or
// nullptr.
std::unique_ptr<ConvGradients> make_pointwise_gradients(const ConvProblem& problem, StreamContext& context);
// The same in fp16 / bf16 for mixed precision training: the forward as one whole-batch GEMM on tensor
// cores (cuDNN's NCHW fp16 kernels were 1.2-7x slower on NIN's 1x1 layers, an H100), and its gradients.
std::unique_ptr<TypedConvTactic> make_pointwise_typed_conv(const ConvProblem& problem, DType dtype,
                                                           StreamContext& context);
std::unique_ptr<TypedConvGradients> make_pointwise_typed_gradients(const ConvProblem& problem, DType dtype,
                                                                   StreamContext& context);
// The pointwise one where it applies, else cuDNN's where it accepts the problem, else the GEMM one;
// ESPRESSO_CONV_TACTIC=im2col or implicit puts the GEMM one first, =cudnn cuDNN's, and
// ESPRESSO_POINTWISE_BACKWARD=0 leaves pointwise problems to cuDNN. nullptr when none can run it.
std::unique_ptr<ConvGradients> make_conv_gradients(const ConvProblem& problem, unsigned passes,
                                                   StreamContext& context);

}  // namespace espresso::cuda
