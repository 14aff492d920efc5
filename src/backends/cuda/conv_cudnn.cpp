// Convolution through cuDNN's convolution API: descriptors, the algorithm (from cuDNN's
// heuristics, restricted to plain FMA math so that TF32 never rounds the products) and its
// workspace are all settled at plan time; forward() is one cudnnConvolutionForward and the bias.
#include <limits>
#include <vector>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/conv_tactics.h"

// cuDNN 9 marks this API deprecated in favour of its graph API; it remains supported throughout
// cuDNN 9 and is what this tactic is written against.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace espresso::cuda {
namespace {

// Larger workspaces are left to algorithms that need less (or to the other tactics).
constexpr std::size_t kMaxWorkspaceBytes = std::size_t{512} << 20;

// The statuses that mean "cuDNN cannot do this configuration" rather than a failure.
bool unsupported(cudnnStatus_t status) {
  return status == CUDNN_STATUS_NOT_SUPPORTED || status == CUDNN_STATUS_BAD_PARAM;
}

class CudnnConv final : public ConvTactic {
 public:
  explicit CudnnConv(StreamContext& context) : context_(context), handle_(context.cudnn()) {
    ESPRESSO_CUDA_CHECK(cudnnCreateTensorDescriptor(&x_desc_));
    ESPRESSO_CUDA_CHECK(cudnnCreateTensorDescriptor(&y_desc_));
    ESPRESSO_CUDA_CHECK(cudnnCreateFilterDescriptor(&w_desc_));
    ESPRESSO_CUDA_CHECK(cudnnCreateConvolutionDescriptor(&conv_desc_));
  }
  ~CudnnConv() override {
    cudnnDestroyConvolutionDescriptor(conv_desc_);
    cudnnDestroyFilterDescriptor(w_desc_);
    cudnnDestroyTensorDescriptor(y_desc_);
    cudnnDestroyTensorDescriptor(x_desc_);
  }
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;

  // False when cuDNN declines the configuration.
  bool prepare(const ConvProblem& p) {
    problem_ = p;
    // 1D and 2D as 4-D NCHW tensors, 3D as 5-D: the 4-D path has the most algorithms.
    const int first_axis = p.axes == 3 ? 0 : 1;
    const int spatial = 3 - first_axis;
    std::vector<int> x_dims{static_cast<int>(p.batch), static_cast<int>(p.in_channels)};
    std::vector<int> y_dims{static_cast<int>(p.batch), static_cast<int>(p.out_channels)};
    std::vector<int> w_dims{static_cast<int>(p.out_channels), static_cast<int>(p.in_per_group())};
    std::vector<int> pad, stride, dilation;
    for (int a = first_axis; a < 3; ++a) {
      const auto i = static_cast<std::size_t>(a);
      x_dims.push_back(static_cast<int>(p.in[i]));
      y_dims.push_back(static_cast<int>(p.out[i]));
      w_dims.push_back(static_cast<int>(p.kernel[i]));
      pad.push_back(static_cast<int>(p.pad[i]));
      stride.push_back(static_cast<int>(p.stride[i]));
      dilation.push_back(static_cast<int>(p.dilation[i]));
    }
    if (!set_tensor(x_desc_, x_dims) || !set_tensor(y_desc_, y_dims)) return false;
    if (!accept(cudnnSetFilterNdDescriptor(w_desc_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                           static_cast<int>(w_dims.size()), w_dims.data()),
                "cudnnSetFilterNdDescriptor") ||
        !accept(cudnnSetConvolutionNdDescriptor(conv_desc_, spatial, pad.data(), stride.data(),
                                                dilation.data(), CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                "cudnnSetConvolutionNdDescriptor") ||
        !accept(cudnnSetConvolutionGroupCount(conv_desc_, static_cast<int>(p.group)),
                "cudnnSetConvolutionGroupCount")) {
      return false;
    }
    ESPRESSO_CUDA_CHECK(cudnnSetConvolutionMathType(conv_desc_, CUDNN_FMA_MATH));

    std::vector<int> inferred(y_dims.size());
    if (!accept(cudnnGetConvolutionNdForwardOutputDim(conv_desc_, x_desc_, w_desc_,
                                                      static_cast<int>(inferred.size()), inferred.data()),
                "cudnnGetConvolutionNdForwardOutputDim") ||
        inferred != y_dims) {
      return false;
    }
    return choose_algorithm();
  }

  void run(const float* x, const float* w, const float* b, float* y) override {
    const float one = 1.0f, zero = 0.0f;
    ESPRESSO_CUDA_CHECK(cudnnConvolutionForward(handle_, &one, x_desc_, x, w_desc_, w, conv_desc_, algorithm_,
                                                workspace_.get(), workspace_bytes_, &zero, y_desc_, y));
    if (b != nullptr) {
      channel_affine(context_, y, nullptr, b, y,
                     {problem_.batch, problem_.out_channels, problem_.out_spatial()});
    }
  }
  const char* name() const override { return "cudnn"; }

 private:
  static bool accept(cudnnStatus_t status, const char* call) {
    if (unsupported(status)) return false;
    check(status, call);
    return true;
  }

  bool set_tensor(cudnnTensorDescriptor_t desc, const std::vector<int>& dims) {
    std::vector<int> strides(dims.size());
    int stride = 1;
    for (std::size_t i = dims.size(); i-- > 0;) {
      strides[i] = stride;
      stride *= dims[i];
    }
    return accept(cudnnSetTensorNdDescriptor(desc, CUDNN_DATA_FLOAT, static_cast<int>(dims.size()),
                                             dims.data(), strides.data()),
                  "cudnnSetTensorNdDescriptor");
  }

  bool choose_algorithm() {
    int count = 0;
    ESPRESSO_CUDA_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(handle_, &count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> candidates(static_cast<std::size_t>(count));
    int returned = 0;
    if (!accept(cudnnGetConvolutionForwardAlgorithm_v7(handle_, x_desc_, w_desc_, conv_desc_, y_desc_, count,
                                                       &returned, candidates.data()),
                "cudnnGetConvolutionForwardAlgorithm_v7")) {
      return false;
    }
    // Ranked best first; tensor-core entries would round through TF32.
    for (int i = 0; i < returned; ++i) {
      const cudnnConvolutionFwdAlgoPerf_t& c = candidates[static_cast<std::size_t>(i)];
      if (c.status != CUDNN_STATUS_SUCCESS || c.mathType == CUDNN_TENSOR_OP_MATH ||
          c.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) {
        continue;
      }
      std::size_t bytes = 0;
      if (!accept(cudnnGetConvolutionForwardWorkspaceSize(handle_, x_desc_, w_desc_, conv_desc_, y_desc_,
                                                          c.algo, &bytes),
                  "cudnnGetConvolutionForwardWorkspaceSize") ||
          bytes > kMaxWorkspaceBytes) {
        continue;
      }
      algorithm_ = c.algo;
      workspace_bytes_ = bytes;
      if (bytes > 0) {
        workspace_ =
            allocate(bytes, context_.device(), "the cuDNN workspace of layer '" + problem_.owner + "'");
      }
      return true;
    }
    return false;
  }

  StreamContext& context_;
  cudnnHandle_t handle_;
  ConvProblem problem_;
  cudnnTensorDescriptor_t x_desc_ = nullptr, y_desc_ = nullptr;
  cudnnFilterDescriptor_t w_desc_ = nullptr;
  cudnnConvolutionDescriptor_t conv_desc_ = nullptr;
  cudnnConvolutionFwdAlgo_t algorithm_ = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  std::size_t workspace_bytes_ = 0;
  std::shared_ptr<void> workspace_;
};

}  // namespace

std::unique_ptr<ConvTactic> make_cudnn_conv(const ConvProblem& p, StreamContext& context) {
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  // cuDNN describes tensors with int dimensions and strides.
  if (p.batch < 1 || p.batch * p.in_channels * p.in_spatial() > int_max ||
      p.batch * p.out_channels * p.out_spatial() > int_max) {
    return nullptr;
  }
  auto tactic = std::make_unique<CudnnConv>(context);
  if (!tactic->prepare(p)) return nullptr;
  return tactic;
}

}  // namespace espresso::cuda
