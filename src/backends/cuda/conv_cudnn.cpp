// Convolution through cuDNN's convolution API: descriptors, the algorithm (restricted to plain FMA
// math so that TF32 never rounds the products, unless the net asked for TF32; fp16 and bf16 tensors
// run on tensor cores with fp32 accumulation) and its workspace are all settled at plan time;
// forward() is one cudnnConvolutionForward and the bias. The training passes (backward data,
// backward filter, and the forward adding into its output) share the descriptors.
//
// Algorithms: every pass (the forward at inference and in training, backward data, backward filter;
// on tensor cores from batch 128 only) times the candidates once per problem (after a warm-up run) with
// cudnnFind*AlgorithmEx on scratch buffers and a workspace of at most kMaxWorkspaceBytes (in a training
// plan, a few times what the layer's tensors take: workspace_limit), and remembers the fastest per device
// model, cuDNN version, shape, data type, math and, where it leaves a candidate out, workspace limit: for
// the process, and on disk (TacticCache "cudnn-algorithms.txt"), so that the next process skips the timing.
// cuDNN's heuristic ranking (cudnnGet*_v7) stands in where timing fails, while a CUDA graph records, or
// with ESPRESSO_CONV_AUTOTUNE=0. Either way the fastest acceptable algorithm wins, deterministic or not (as
// in PyTorch); with ESPRESSO_CONV_DETERMINISTIC=1 deterministic ones (no atomics: the same gradients every
// run) are preferred over faster ones that are not. The workspace is the stream's shared one
// (StreamContext::reserve_workspace), or the training plan's (docs/training-memory.md).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/conv_tactics.h"
#include "backends/tactic_cache.h"
#include "espresso/errors.h"

// cuDNN 9 marks this API deprecated in favour of its graph API; it remains supported throughout
// cuDNN 9 and is what this tactic is written against.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace espresso::cuda {
namespace {

// Larger workspaces are left to algorithms that need less (or to the other tactics).
constexpr std::size_t kMaxWorkspaceBytes = std::size_t{512} << 20;
// A training plan's workspaces share its arena with the activations (StreamContext::planning_workspaces):
// there an algorithm may use a few times what its layer's own x, y and w take (workspace_limit), and only
// those candidates are timed. Unbounded, NIN's bf16 step peaked at 249 to 364 MiB from process to process
// against PyTorch's 250: in some a 112 MB backward-filter workspace for conv2 sat at the busiest moment, in a
// fresh one timing conv1's fp32 candidates took 373 MB of scratch
// (bench/results/2026-12-07-h100-train-workspaces.md). Below this floor a workspace hardly shows next to
// the 32 MiB cuBLAS one, and small layers keep the choice they would have unbounded.
constexpr std::size_t kBoundedWorkspaceFloor = std::size_t{16} << 20;
// The smallest batch whose tensor-core convolutions are chosen by timing (see choose()).
constexpr std::int64_t kTimedTensorOpBatch = 128;

// The statuses that mean "cuDNN cannot do this configuration" rather than a failure.
bool unsupported(cudnnStatus_t status) {
  return status == CUDNN_STATUS_NOT_SUPPORTED || status == CUDNN_STATUS_BAD_PARAM;
}

bool accept(cudnnStatus_t status, const char* call) {
  if (unsupported(status)) return false;
  check(status, call);
  return true;
}

// cuDNN describes tensors with int dimensions and strides.
bool fits_int(const ConvProblem& p) {
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  return p.batch >= 1 && p.batch * p.in_channels * p.in_spatial() <= int_max &&
         p.batch * p.out_channels * p.out_spatial() <= int_max;
}

cudnnDataType_t cudnn_type(DType dtype) {
  switch (dtype) {
    case DType::f16:
      return CUDNN_DATA_HALF;
    case DType::bf16:
      return CUDNN_DATA_BFLOAT16;
    default:
      return CUDNN_DATA_FLOAT;
  }
}

// x, y, the filter and the convolution of one problem: tensors in `dtype`, products accumulated in
// fp32; FMA math for f32 unless `tensor_ops` (TF32), tensor cores for f16 and bf16.
class Descriptors {
 public:
  Descriptors() {
    ESPRESSO_CUDA_CHECK(cudnnCreateTensorDescriptor(&x));
    ESPRESSO_CUDA_CHECK(cudnnCreateTensorDescriptor(&y));
    ESPRESSO_CUDA_CHECK(cudnnCreateFilterDescriptor(&w));
    ESPRESSO_CUDA_CHECK(cudnnCreateConvolutionDescriptor(&conv));
  }
  ~Descriptors() {
    cudnnDestroyConvolutionDescriptor(conv);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(x);
  }
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;

  // False when cuDNN declines the configuration.
  bool describe(const ConvProblem& p, DType dtype = DType::f32, bool tensor_ops = false) {
    data_type_ = cudnn_type(dtype);
    tensor_ops_ = tensor_ops || dtype != DType::f32;
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
    const bool channels_last = p.channels_last && x_dims.size() == 4;
    if (p.channels_last != channels_last) return false;
    if (!set_tensor(x, x_dims, channels_last) || !set_tensor(y, y_dims, channels_last)) return false;
    const cudnnTensorFormat_t filter_format = channels_last ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    if (!accept(cudnnSetFilterNdDescriptor(w, data_type_, filter_format, static_cast<int>(w_dims.size()),
                                           w_dims.data()),
                "cudnnSetFilterNdDescriptor") ||
        !accept(cudnnSetConvolutionNdDescriptor(conv, spatial, pad.data(), stride.data(), dilation.data(),
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                "cudnnSetConvolutionNdDescriptor") ||
        !accept(cudnnSetConvolutionGroupCount(conv, static_cast<int>(p.group)),
                "cudnnSetConvolutionGroupCount")) {
      return false;
    }
    ESPRESSO_CUDA_CHECK(
        cudnnSetConvolutionMathType(conv, tensor_ops_ ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));

    // A transposed problem (a deconvolution's) with output padding can be one cuDNN sizes differently.
    std::vector<int> inferred(y_dims.size());
    return accept(cudnnGetConvolutionNdForwardOutputDim(conv, x, w, static_cast<int>(inferred.size()),
                                                        inferred.data()),
                  "cudnnGetConvolutionNdForwardOutputDim") &&
           inferred == y_dims;
  }

  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  // Whether algorithms on tensor cores may be chosen.
  bool tensor_ops() const { return tensor_ops_; }

 private:
  cudnnDataType_t data_type_ = CUDNN_DATA_FLOAT;
  bool tensor_ops_ = false;

  // dims N, C, spatial...; `channels_last`: stored N, H, W, C.
  bool set_tensor(cudnnTensorDescriptor_t desc, const std::vector<int>& dims, bool channels_last) const {
    std::vector<int> strides(dims.size());
    int stride = 1;
    for (std::size_t i = dims.size(); i-- > 0;) {
      strides[i] = stride;
      stride *= dims[i];
    }
    if (channels_last) {
      strides[1] = 1;
      strides[3] = dims[1];
      strides[2] = dims[1] * dims[3];
      strides[0] = dims[1] * dims[2] * dims[3];
    }
    return accept(cudnnSetTensorNdDescriptor(desc, data_type_, static_cast<int>(dims.size()), dims.data(),
                                             strides.data()),
                  "cudnnSetTensorNdDescriptor");
  }
};

template <typename Algo>
struct Choice {
  Algo algo;
  std::size_t workspace_bytes;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;  // the math the algorithm was timed in
  bool timed = false;                         // chosen by timing (else cuDNN's heuristic)
  float milliseconds = 0.0f;                  // its measured time; 0 when not measured
};

// The variable says no: 0, false, off or no.
bool env_off(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return false;
  for (const char* off : {"0", "false", "off", "no"}) {
    if (std::strcmp(value, off) == 0) return true;
  }
  return false;
}

// ESPRESSO_CONV_DETERMINISTIC=1: the same gradients every run, at a price (ResNet-18's training step
// 11 % slower on an H100, NIN's workspace a third larger). Off by default, as in PyTorch and Caffe.
bool deterministic_requested() {
  const char* value = std::getenv("ESPRESSO_CONV_DETERMINISTIC");
  return value != nullptr && *value != '\0' && !env_off("ESPRESSO_CONV_DETERMINISTIC");
}

// With deterministic_requested(), deterministic algorithms first (then any); else any at once.
std::vector<bool> determinism_tiers() {
  if (!deterministic_requested()) return {false};
  return {true, false};
}

// A timed algorithm at most this much slower than the fastest wins when it needs less workspace:
// within timing noise, and the stream's shared workspace is a large part of a training net's memory.
constexpr float kWorkspaceSlack = 0.03f;

// From a ranking (best first: cuDNN's heuristic order, or measured times): the first algorithm that
// ran, keeps to FMA math (tensor-core entries would round through TF32) unless `tensor_ops` allows
// them, and needs at most `limit` bytes of workspace, preferring deterministic ones over a better-ranked one
// that is not (determinism_tiers); among measured ones, the one with the least workspace within
// kWorkspaceSlack of the fastest. `workspace(perf, bytes)` returns false when cuDNN declines the
// algorithm.
template <typename Perf, typename Workspace>
auto pick(const std::vector<Perf>& ranked, int returned, bool tensor_ops, std::size_t limit,
          Workspace workspace) -> std::optional<Choice<decltype(Perf::algo)>> {
  for (const bool deterministic_only : determinism_tiers()) {
    std::optional<Choice<decltype(Perf::algo)>> best;
    float best_time = 0.0f;
    for (int i = 0; i < returned; ++i) {
      const Perf& c = ranked[static_cast<std::size_t>(i)];
      if (c.status != CUDNN_STATUS_SUCCESS ||
          (!tensor_ops &&
           (c.mathType == CUDNN_TENSOR_OP_MATH || c.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)) ||
          (deterministic_only && c.determinism != CUDNN_DETERMINISTIC)) {
        continue;
      }
      std::size_t bytes = 0;
      if (!workspace(c, bytes) || bytes > limit) continue;
      if (!best) {
        best = Choice<decltype(Perf::algo)>{c.algo, bytes, c.mathType};
        best_time = c.time;
        if (!(best_time > 0.0f)) break;  // a heuristic ranking: no times to weigh
        best->milliseconds = c.time;
      } else if (c.time <= best_time * (1.0f + kWorkspaceSlack) && bytes < best->workspace_bytes) {
        best = Choice<decltype(Perf::algo)>{c.algo, bytes, c.mathType, false, c.time};
      }
    }
    if (best) return best;
  }
  return std::nullopt;
}

// The workspace an algorithm needs for a problem; false when cuDNN declines the algorithm there.
bool forward_workspace(cudnnHandle_t handle, const Descriptors& d, cudnnConvolutionFwdAlgo_t algo,
                       std::size_t& bytes) {
  return accept(cudnnGetConvolutionForwardWorkspaceSize(handle, d.x, d.w, d.conv, d.y, algo, &bytes),
                "cudnnGetConvolutionForwardWorkspaceSize");
}

bool backward_data_workspace(cudnnHandle_t handle, const Descriptors& d, cudnnConvolutionBwdDataAlgo_t algo,
                             std::size_t& bytes) {
  return accept(cudnnGetConvolutionBackwardDataWorkspaceSize(handle, d.w, d.y, d.conv, d.x, algo, &bytes),
                "cudnnGetConvolutionBackwardDataWorkspaceSize");
}

bool backward_filter_workspace(cudnnHandle_t handle, const Descriptors& d,
                               cudnnConvolutionBwdFilterAlgo_t algo, std::size_t& bytes) {
  return accept(cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, d.x, d.y, d.conv, d.w, algo, &bytes),
                "cudnnGetConvolutionBackwardFilterWorkspaceSize");
}

std::optional<Choice<cudnnConvolutionFwdAlgo_t>> pick_forward(cudnnHandle_t handle, const Descriptors& d,
                                                              std::size_t limit) {
  int count = 0;
  ESPRESSO_CUDA_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(handle, &count));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> ranked(static_cast<std::size_t>(count));
  int returned = 0;
  if (!accept(cudnnGetConvolutionForwardAlgorithm_v7(handle, d.x, d.w, d.conv, d.y, count, &returned,
                                                     ranked.data()),
              "cudnnGetConvolutionForwardAlgorithm_v7")) {
    return std::nullopt;
  }
  return pick(ranked, returned, d.tensor_ops(), limit,
              [&](const cudnnConvolutionFwdAlgoPerf_t& c, std::size_t& bytes) {
                return forward_workspace(handle, d, c.algo, bytes);
              });
}

std::optional<Choice<cudnnConvolutionBwdDataAlgo_t>> pick_backward_data(cudnnHandle_t handle,
                                                                        const Descriptors& d,
                                                                        std::size_t limit) {
  int count = 0;
  ESPRESSO_CUDA_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, &count));
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> ranked(static_cast<std::size_t>(count));
  int returned = 0;
  if (!accept(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, d.w, d.y, d.conv, d.x, count, &returned,
                                                          ranked.data()),
              "cudnnGetConvolutionBackwardDataAlgorithm_v7")) {
    return std::nullopt;
  }
  return pick(ranked, returned, d.tensor_ops(), limit,
              [&](const cudnnConvolutionBwdDataAlgoPerf_t& c, std::size_t& bytes) {
                return backward_data_workspace(handle, d, c.algo, bytes);
              });
}

std::optional<Choice<cudnnConvolutionBwdFilterAlgo_t>> pick_backward_filter(cudnnHandle_t handle,
                                                                            const Descriptors& d,
                                                                            std::size_t limit) {
  int count = 0;
  ESPRESSO_CUDA_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(handle, &count));
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> ranked(static_cast<std::size_t>(count));
  int returned = 0;
  if (!accept(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, d.x, d.y, d.conv, d.w, count, &returned,
                                                            ranked.data()),
              "cudnnGetConvolutionBackwardFilterAlgorithm_v7")) {
    return std::nullopt;
  }
  return pick(ranked, returned, d.tensor_ops(), limit,
              [&](const cudnnConvolutionBwdFilterAlgoPerf_t& c, std::size_t& bytes) {
                return backward_filter_workspace(handle, d, c.algo, bytes);
              });
}

// Choosing by timing -------------------------------------------------------------------------------

enum class PassKind { forward, data, filter };

bool capturing(const StreamContext& context) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  ESPRESSO_CUDA_CHECK(cudaStreamIsCapturing(context.stream(), &status));
  return status != cudaStreamCaptureStatusNone;
}

// The device model and cuDNN version a timing holds for, as one word:
// "cudnn91400/NVIDIA_H100_80GB_HBM3/sm90".
std::string device_identity(int device) {
  static std::mutex mutex;
  static auto* identities = new std::map<int, std::string>;  // never destroyed, like the pool
  const std::lock_guard lock(mutex);
  auto [it, added] = identities->try_emplace(device);
  if (added) {
    cudaDeviceProp properties{};
    ESPRESSO_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
    std::string name = properties.name;
    std::replace_if(
        name.begin(), name.end(), [](unsigned char c) { return !std::isalnum(c) && c != '-'; }, '_');
    it->second = "cudnn" + std::to_string(cudnnGetVersion()) + "/" + name + "/sm" +
                 std::to_string(properties.major * 10 + properties.minor);
  }
  return it->second;
}

// What a timed choice depends on: the device model, the pass, the problem's shape and layout, the data
// type, the math and the determinism policy.
std::string tuning_key(PassKind pass, const ConvProblem& p, DType dtype, bool tensor_ops, int device) {
  // "warm": timed by a second cudnnFind (choose); choices timed cold, by one, are not reused.
  std::string key = device_identity(device) + "/warm/";
  const auto add = [&key](std::int64_t value) {
    key += std::to_string(value);
    key += ',';
  };
  for (const std::int64_t value :
       {static_cast<std::int64_t>(pass), static_cast<std::int64_t>(dtype), std::int64_t{tensor_ops},
        std::int64_t{!deterministic_requested()}, p.batch, p.in_channels, p.out_channels, p.group}) {
    add(value);
  }
  if (p.channels_last) key += "nhwc,";
  for (const auto* axes : {&p.in, &p.out, &p.kernel, &p.stride, &p.pad, &p.dilation}) {
    for (const std::int64_t value : *axes) add(value);
  }
  return key;
}

// The timed choices, for the process: the same layer shapes come back with every net made.
template <typename Algo>
std::map<std::string, Choice<Algo>>& remembered() {
  static auto* choices = new std::map<std::string, Choice<Algo>>;  // never destroyed, like the pool
  return *choices;
}

std::mutex& remembered_mutex() {
  static std::mutex mutex;
  return mutex;
}

TacticCache& disk_cache() { return tactic_cache("cudnn-algorithms.txt"); }

std::size_t element_bytes(DType dtype) { return dtype == DType::f32 ? 4 : 2; }

// The most workspace an algorithm of problem `p` may use: kMaxWorkspaceBytes, and while a training plan
// places workspaces in its arena, a few times the problem's own tensors in `dtype` (kBoundedWorkspaceFloor at
// least). Twice in fp16 and bf16, whose tensor-core algorithms need about one padded copy of the tensors in
// another layout (at once, they were left out: NIN's bf16 step took 11.5 ms instead of 2.1); four times in
// fp32, where the FFT and Winograd algorithms that win need more (at twice, NIN's fp32 step took 7.2 ms
// instead of 4.6). The fp32 passes timed against a low-precision layer's (cudnn_backward_ms) are bounded as
// that layer; should fp32 win, the fp32 layer is timed again within its own bound. Deterministic
// algorithms (ESPRESSO_CONV_DETERMINISTIC=1) are not bounded: they were asked for.
std::size_t workspace_limit(const ConvProblem& p, DType dtype, const StreamContext& context) {
  if (!context.planning_workspaces() || deterministic_requested()) return kMaxWorkspaceBytes;
  const auto tensors =
      static_cast<std::size_t>(p.batch * (p.in_channels * p.in_spatial() + p.out_channels * p.out_spatial()) +
                               p.out_channels * p.in_per_group() * p.taps()) *
      element_bytes(dtype);
  const std::size_t times = dtype == DType::f32 ? 4 : 2;
  return std::min(kMaxWorkspaceBytes, std::max(kBoundedWorkspaceFloor, times * tensors));
}

// Zero-filled x, w and y of a problem and the workspace timing may use: what the hungriest candidate
// needs (`largest`), at most half the device's free memory. Throws DeviceError when memory is short.
struct Scratch {
  Scratch(const ConvProblem& p, DType dtype, std::size_t largest, StreamContext& context) {
    const std::size_t size = element_bytes(dtype);
    const auto bytes = [size](std::int64_t count) { return static_cast<std::size_t>(count) * size; };
    const std::string purpose = "timing the cuDNN algorithms of layer '" + p.owner + "'";
    x = allocate(bytes(p.batch * p.in_channels * p.in_spatial()), context.device(), purpose);
    y = allocate(bytes(p.batch * p.out_channels * p.out_spatial()), context.device(), purpose);
    w = allocate(bytes(p.out_channels * p.in_per_group() * p.taps()), context.device(), purpose);
    ESPRESSO_CUDA_CHECK(cudaMemsetAsync(x.get(), 0, bytes(p.batch * p.in_channels * p.in_spatial()),
                                        context.stream()));
    ESPRESSO_CUDA_CHECK(cudaMemsetAsync(y.get(), 0, bytes(p.batch * p.out_channels * p.out_spatial()),
                                        context.stream()));
    ESPRESSO_CUDA_CHECK(cudaMemsetAsync(w.get(), 0, bytes(p.out_channels * p.in_per_group() * p.taps()),
                                        context.stream()));
    std::size_t free_bytes = 0, total_bytes = 0;
    ESPRESSO_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    workspace_bytes = std::min(largest, free_bytes / 2);
    if (workspace_bytes > 0) workspace = allocate(workspace_bytes, context.device(), purpose);
  }
  std::shared_ptr<void> x, y, w, workspace;
  std::size_t workspace_bytes = 0;
};

// The fastest acceptable algorithm by `find` (a cudnnFind*AlgorithmEx call on the scratch buffers,
// filling a ranking in time order), remembered under its key, in the process and on disk; else, and
// without timing (capture, ESPRESSO_CONV_AUTOTUNE=0), `heuristic()`. An algorithm read from disk is
// used when cuDNN still accepts it (`workspace(algo, bytes)` true) within the workspace limit.
template <typename Perf, int kAlgorithms, typename Find, typename Workspace, typename Heuristic>
auto choose(PassKind pass, const ConvProblem& p, DType dtype, const Descriptors& d, std::size_t limit,
            StreamContext& context, int candidates, Find find, Workspace workspace, Heuristic heuristic)
    -> std::optional<Choice<decltype(Perf::algo)>> {
  using Algo = decltype(Perf::algo);
  // On tensor cores (fp16, bf16, TF32) timing the forward paid off only for large batches: at batch 1 and
  // 64 the timed choices ran slower than the heuristic's
  // (bench/results/2026-12-06-h100-fusion-autotune-vulkan.md). The backward passes (training) are always
  // timed.
  const bool worth_timing = !d.tensor_ops() || p.batch >= kTimedTensorOpBatch || pass != PassKind::forward;
  if (!worth_timing || env_off("ESPRESSO_CONV_AUTOTUNE") || capturing(context)) return heuristic();
  // What the hungriest candidate needs, and the hungriest within the limit: the timing scratch's size. A
  // failing query leaves the choice to the heuristic, as a failing timing does.
  std::size_t hungriest = 0, largest = 0;
  try {
    for (int algo = 0; algo < kAlgorithms; ++algo) {
      std::size_t bytes = 0;
      if (!workspace(static_cast<Algo>(algo), bytes) || bytes > kMaxWorkspaceBytes) continue;
      hungriest = std::max(hungriest, bytes);
      if (bytes <= limit) largest = std::max(largest, bytes);
    }
  } catch (const DeviceError&) {
    return heuristic();
  }
  // A limit that leaves every candidate in changes nothing: the problem shares the unbounded choice (and a
  // training plan the naive plan's, so that the two train alike).
  const std::string key = tuning_key(pass, p, dtype, d.tensor_ops(), context.device().index) +
                          (hungriest > limit ? "bounded" + std::to_string(limit) : "");
  {
    const std::lock_guard lock(remembered_mutex());
    if (auto it = remembered<Algo>().find(key); it != remembered<Algo>().end()) return it->second;
  }
  if (const std::optional<std::string> stored = disk_cache().find(key)) {
    // "algorithm/math", then "/milliseconds" (written since mixed precision training compares them)
    char* end = nullptr;
    const long algo = std::strtol(stored->c_str(), &end, 10);
    const long math = *end == '/' ? std::strtol(end + 1, &end, 10) : -1;
    const float milliseconds = *end == '/' ? std::strtof(end + 1, &end) : 0.0f;
    std::size_t bytes = 0;
    if (*end == '\0' && algo >= 0 && algo < kAlgorithms && math >= CUDNN_DEFAULT_MATH &&
        math <= CUDNN_FMA_MATH && workspace(static_cast<Algo>(algo), bytes) && bytes <= limit) {
      const Choice<Algo> choice{static_cast<Algo>(algo), bytes, static_cast<cudnnMathType_t>(math), true,
                                std::isfinite(milliseconds) && milliseconds > 0.0f ? milliseconds : 0.0f};
      const std::lock_guard lock(remembered_mutex());
      remembered<Algo>().emplace(key, choice);
      return choice;
    }
  }
  std::optional<Choice<Algo>> chosen;
  try {
    // No capture may start meanwhile: timing synchronises the device.
    const std::lock_guard exclusion(capture_exclusion());
    // No larger than the candidates need: the scratch counts towards the process's peak memory.
    Scratch scratch(p, dtype, largest, context);
    std::vector<Perf> ranked(static_cast<std::size_t>(std::max(candidates, 1)));
    int returned = 0;
    // Twice, ranking by the second: cuDNN times each algorithm once, and an algorithm's first run in the
    // process pays for loading its kernels (CUDA loads modules lazily). Timed cold, ResNet-18's fp16
    // backward-data passes went to FFT algorithms 3-4x slower than the tensor-core ones that lost the
    // first timing (2.4 ms of an 11 ms step on an H200).
    cudnnStatus_t status = find(scratch, static_cast<int>(ranked.size()), returned, ranked.data());
    if (status == CUDNN_STATUS_SUCCESS)
      status = find(scratch, static_cast<int>(ranked.size()), returned, ranked.data());
    if (status == CUDNN_STATUS_SUCCESS) {
      chosen = pick(ranked, returned, d.tensor_ops(), limit, [](const Perf& c, std::size_t& bytes) {
        bytes = c.memory;
        return true;
      });
    }
    ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(context.stream()));  // before the scratch goes back
  } catch (const DeviceError&) {
    chosen.reset();  // out of memory for the scratch, say: the heuristic needs none
  }
  if (!chosen) return heuristic();
  chosen->timed = true;
  disk_cache().store(key, std::to_string(static_cast<int>(chosen->algo)) + "/" +
                              std::to_string(static_cast<int>(chosen->math)) + "/" +
                              std::to_string(chosen->milliseconds));
  const std::lock_guard lock(remembered_mutex());
  remembered<Algo>().emplace(key, *chosen);
  return chosen;
}

std::optional<Choice<cudnnConvolutionFwdAlgo_t>> choose_forward(const ConvProblem& p, DType dtype,
                                                                const Descriptors& d, std::size_t limit,
                                                                StreamContext& context) {
  cudnnHandle_t handle = context.cudnn();
  int count = 0;
  ESPRESSO_CUDA_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(handle, &count));
  return choose<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT>(
      PassKind::forward, p, dtype, d, limit, context, count,
      [&](Scratch& s, int requested, int& returned, cudnnConvolutionFwdAlgoPerf_t* results) {
        return cudnnFindConvolutionForwardAlgorithmEx(handle, d.x, s.x.get(), d.w, s.w.get(), d.conv, d.y,
                                                      s.y.get(), requested, &returned, results,
                                                      s.workspace.get(), s.workspace_bytes);
      },
      [&](cudnnConvolutionFwdAlgo_t algo, std::size_t& bytes) {
        return forward_workspace(handle, d, algo, bytes);
      },
      [&] { return pick_forward(handle, d, limit); });
}

std::optional<Choice<cudnnConvolutionBwdDataAlgo_t>> choose_backward_data(const ConvProblem& p, DType dtype,
                                                                          const Descriptors& d,
                                                                          std::size_t limit,
                                                                          StreamContext& context) {
  cudnnHandle_t handle = context.cudnn();
  int count = 0;
  ESPRESSO_CUDA_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, &count));
  return choose<cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT>(
      PassKind::data, p, dtype, d, limit, context, count,
      [&](Scratch& s, int requested, int& returned, cudnnConvolutionBwdDataAlgoPerf_t* results) {
        return cudnnFindConvolutionBackwardDataAlgorithmEx(handle, d.w, s.w.get(), d.y, s.y.get(), d.conv, d.x,
                                                           s.x.get(), requested, &returned, results,
                                                           s.workspace.get(), s.workspace_bytes);
      },
      [&](cudnnConvolutionBwdDataAlgo_t algo, std::size_t& bytes) {
        return backward_data_workspace(handle, d, algo, bytes);
      },
      [&] { return pick_backward_data(handle, d, limit); });
}

std::optional<Choice<cudnnConvolutionBwdFilterAlgo_t>> choose_backward_filter(
    const ConvProblem& p, DType dtype, const Descriptors& d, std::size_t limit, StreamContext& context) {
  cudnnHandle_t handle = context.cudnn();
  int count = 0;
  ESPRESSO_CUDA_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(handle, &count));
  return choose<cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT>(
      PassKind::filter, p, dtype, d, limit, context, count,
      [&](Scratch& s, int requested, int& returned, cudnnConvolutionBwdFilterAlgoPerf_t* results) {
        return cudnnFindConvolutionBackwardFilterAlgorithmEx(handle, d.x, s.x.get(), d.y, s.y.get(), d.conv,
                                                             d.w, s.w.get(), requested, &returned, results,
                                                             s.workspace.get(), s.workspace_bytes);
      },
      [&](cudnnConvolutionBwdFilterAlgo_t algo, std::size_t& bytes) {
        return backward_filter_workspace(handle, d, algo, bytes);
      },
      [&] { return pick_backward_filter(handle, d, limit); });
}

// The math an algorithm runs in where tensor cores are allowed at all (fp32 stays in FMA math: cuDNN's
// default math would let it round through TF32): a timed one's it was timed in (its workspace was sized
// there), else tensor-op math as Descriptors::describe set it.
template <typename Algo>
cudnnMathType_t chosen_math(const Choice<Algo>& choice) {
  return choice.timed && !env_off("ESPRESSO_CONV_CHOSEN_MATH") ? choice.math : CUDNN_TENSOR_OP_MATH;
}

// cuDNN's activation for a fused clamp [lo, hi]: none, ReLU or ReLU capped at hi; false for other clamps.
bool fused_activation(float lo, float hi, cudnnActivationMode_t& mode, double& ceiling) {
  constexpr float inf = std::numeric_limits<float>::infinity();
  ceiling = 0.0;
  if (lo == -inf && hi == inf) {
    mode = CUDNN_ACTIVATION_IDENTITY;
  } else if (lo == 0.0f && hi == inf) {
    mode = CUDNN_ACTIVATION_RELU;
  } else if (lo == 0.0f && std::isfinite(hi)) {
    mode = CUDNN_ACTIVATION_CLIPPED_RELU;
    ceiling = hi;
  } else {
    return false;
  }
  return true;
}

class CudnnConv final : public ConvTactic, public TypedConvTactic {
 public:
  // The fused call serves fp16 and bf16 (the kernel decides whether to use it: ESPRESSO_CUDNN_FUSED).
  CudnnConv(DType dtype, StreamContext& context)
      : context_(context), handle_(context.cudnn()), dtype_(dtype), fusing_(dtype != DType::f32) {}
  ~CudnnConv() override {
    if (activation_ != nullptr) cudnnDestroyActivationDescriptor(activation_);
    if (bias_ != nullptr) cudnnDestroyTensorDescriptor(bias_);
  }
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;

  // False when cuDNN declines the configuration.
  bool prepare(const ConvProblem& p) {
    problem_ = p;
    if (!descriptors_.describe(p, dtype_, context_.tf32())) return false;
    const auto chosen =
        choose_forward(p, dtype_, descriptors_, workspace_limit(p, dtype_, context_), context_);
    if (!chosen) return false;
    if (descriptors_.tensor_ops())
      ESPRESSO_CUDA_CHECK(cudnnSetConvolutionMathType(descriptors_.conv, chosen_math(*chosen)));
    algorithm_ = chosen->algo;
    workspace_bytes_ = chosen->workspace_bytes;
    context_.reserve_workspace(workspace_bytes_);
    if (fusing_) {
      // The fused call's bias (1, K, 1, 1 in the storage type) and activation.
      ESPRESSO_CUDA_CHECK(cudnnCreateTensorDescriptor(&bias_));
      ESPRESSO_CUDA_CHECK(cudnnCreateActivationDescriptor(&activation_));
      std::vector<int> dims(p.axes == 3 ? 5 : 4, 1), strides(dims.size(), 1);
      dims[1] = static_cast<int>(p.out_channels);
      strides[0] = dims[1];
      ESPRESSO_CUDA_CHECK(cudnnSetTensorNdDescriptor(bias_, cudnn_type(dtype_), static_cast<int>(dims.size()),
                                                     dims.data(), strides.data()));
    }
    return true;
  }

  void run(const float* x, const float* w, const float* b, float* y) override { run_typed(x, w, b, y); }
  void run_typed(const void* x, const void* w, const float* b, void* y) override {
    // Scaling factors are float for every data type cuDNN takes here (double only for double data).
    const float one = 1.0f, zero = 0.0f;
    const Descriptors& d = descriptors_;
    ESPRESSO_CUDA_CHECK(cudnnConvolutionForward(handle_, &one, d.x, x, d.w, w, d.conv, algorithm_,
                                                context_.workspace(), workspace_bytes_, &zero, d.y, y));
    if (b != nullptr) channel_affine(context_, dtype_, y, nullptr, b, y, problem_.out_extent());
  }
  // cudnnConvolutionBiasActivationForward: activation(conv + residual + bias), which is the epilogue's
  // clamp(y + b + residual) where the clamp is an activation cuDNN has. cuDNN runs the identity only with
  // the precomputed implicit GEMM, and may decline a configuration: then this layer stops trying.
  // A destination elsewhere (the Add in place on the residual) stays with the separate epilogue: cuDNN's
  // output would alias its residual input.
  bool can_fuse(const Epilogue& e) const override {
    cudnnActivationMode_t mode{};
    double ceiling = 0.0;
    return fusing_ && e.destination == nullptr && fused_activation(e.lo, e.hi, mode, ceiling) &&
           (mode != CUDNN_ACTIVATION_IDENTITY ||
            algorithm_ == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM);
  }
  bool run_fused(const void* x, const void* w, const void* b, const Epilogue& e, void* y) override {
    if (b == nullptr || !can_fuse(e)) return false;
    cudnnActivationMode_t mode{};
    double ceiling = 0.0;
    fused_activation(e.lo, e.hi, mode, ceiling);
    ESPRESSO_CUDA_CHECK(cudnnSetActivationDescriptor(activation_, mode, CUDNN_NOT_PROPAGATE_NAN, ceiling));
    const float one = 1.0f, residual_share = e.residual != nullptr ? 1.0f : 0.0f;
    const Descriptors& d = descriptors_;
    const cudnnStatus_t status = cudnnConvolutionBiasActivationForward(
        handle_, &one, d.x, x, d.w, w, d.conv, algorithm_, context_.workspace(), workspace_bytes_,
        &residual_share, d.y, e.residual != nullptr ? e.residual : y, bias_, b, activation_, d.y, y);
    if (unsupported(status)) {
      fusing_ = false;
      return false;
    }
    check(status, "cudnnConvolutionBiasActivationForward");
    return true;
  }
  const char* name() const override { return problem_.channels_last ? "cudnn-nhwc" : "cudnn"; }

 private:
  StreamContext& context_;
  cudnnHandle_t handle_;
  DType dtype_;
  ConvProblem problem_;
  Descriptors descriptors_;
  cudnnConvolutionFwdAlgo_t algorithm_ = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  std::size_t workspace_bytes_ = 0;  // of the context's shared workspace
  bool fusing_;                      // run_fused may try cuDNN's fused call
  cudnnTensorDescriptor_t bias_ = nullptr;  // the fused call's, made by prepare() when fusing_
  cudnnActivationDescriptor_t activation_ = nullptr;
};

// The passes use the stream's shared workspace, reserved as large as the largest needs. In fp32 each
// pass adds into its destination (beta = 1); in fp16 / bf16 the filter gradient overwrites its own.
class CudnnGradients final : public ConvGradients, public TypedConvGradients {
 public:
  CudnnGradients(DType dtype, StreamContext& context)
      : context_(context), handle_(context.cudnn()), dtype_(dtype) {}

  // Chooses the passes' algorithms; false when cuDNN declines the configuration or one of the passes.
  // reserve() then claims the workspace they need. In a training plan their workspaces are bounded as for
  // a layer in `bounded_as` (workspace_limit).
  bool prepare(const ConvProblem& p, unsigned passes, DType bounded_as) {
    if (!descriptors_.describe(p, dtype_)) return false;
    const std::size_t limit = workspace_limit(p, bounded_as, context_);
    filter_elements_ = p.out_channels * p.in_per_group() * p.taps();
    std::size_t bytes = 0;
    if ((passes & kForwardPass) != 0) {
      forward_ = choose_forward(p, dtype_, descriptors_, limit, context_);
      if (!forward_) return false;
      bytes = std::max(bytes, forward_->workspace_bytes);
    }
    if ((passes & kDataPass) != 0) {
      data_ = choose_backward_data(p, dtype_, descriptors_, limit, context_);
      if (!data_) return false;
      bytes = std::max(bytes, data_->workspace_bytes);
    }
    if ((passes & kFilterPass) != 0) {
      filter_ = choose_backward_filter(p, dtype_, descriptors_, limit, context_);
      if (!filter_) return false;
      bytes = std::max(bytes, filter_->workspace_bytes);
    }
    workspace_bytes_ = bytes;
    scratch_offset_ = (bytes + 255) / 256 * 256;
    return true;
  }
  void reserve() {
    const std::size_t scratch =
        dtype_ == DType::f32 ? 0 : static_cast<std::size_t>(filter_elements_) * dtype_size(dtype_);
    context_.reserve_workspace(scratch_offset_ + scratch);
  }
  // What the prepared passes took when timed, in milliseconds; 0 when not all were.
  float measured_ms() const {
    float total = 0.0f;
    bool all = true;
    for (const float* pass : {forward_ ? &forward_->milliseconds : nullptr, data_ ? &data_->milliseconds : nullptr,
                              filter_ ? &filter_->milliseconds : nullptr}) {
      if (pass == nullptr) continue;
      total += *pass;
      all = all && *pass > 0.0f;
    }
    return all ? total : 0.0f;
  }

  void forward_add(const float* x, const float* w, float* y) override {
    const float one = 1.0f;
    const Descriptors& d = descriptors_;
    const auto* choice = required(forward_);
    use_math(*choice);
    ESPRESSO_CUDA_CHECK(cudnnConvolutionForward(handle_, &one, d.x, x, d.w, w, d.conv, choice->algo,
                                                context_.workspace(), workspace_bytes_, &one, d.y, y));
  }

  void data_add(const float* w, const float* dy, float* dx) override {
    data_add(static_cast<const void*>(w), static_cast<const void*>(dy), static_cast<void*>(dx));
  }
  void data_add(const void* w, const void* dy, void* dx) override {
    const float one = 1.0f;
    const Descriptors& d = descriptors_;
    const auto* choice = required(data_);
    use_math(*choice);
    ESPRESSO_CUDA_CHECK(cudnnConvolutionBackwardData(handle_, &one, d.w, w, d.y, dy, d.conv, choice->algo,
                                                     context_.workspace(), workspace_bytes_, &one, d.x, dx));
  }

  void filter_add(const float* x, const float* dy, float* dw) override { filter_pass(x, dy, dw, 1.0f); }
  // fp16 / bf16: cuDNN's filter gradient is in the data's type, so into a scratch after cuDNN's part of
  // the shared workspace, then added to dw.
  void filter_add(const void* x, const void* dy, float* dw) override {
    Tensor scratch = Tensor::wrap(static_cast<std::byte*>(context_.workspace()) + scratch_offset_,
                                  Shape{filter_elements_}, dtype_, context_.device());
    filter_pass(x, dy, scratch.raw(), 0.0f);
    Tensor gradient = Tensor::wrap(dw, Shape{filter_elements_}, DType::f32, context_.device());
    context_.add_converted(scratch, gradient);
  }

 private:
  // A pass that was not asked for at preparation is a bug in the caller, reported like a device fault.
  template <typename Algo>
  static const Choice<Algo>* required(const std::optional<Choice<Algo>>& choice) {
    if (!choice) throw DeviceError("cuDNN convolution: a pass that was not prepared was asked for");
    return &*choice;
  }

  void filter_pass(const void* x, const void* dy, void* dw, float beta) {
    const float one = 1.0f;
    const Descriptors& d = descriptors_;
    const auto* choice = required(filter_);
    use_math(*choice);
    ESPRESSO_CUDA_CHECK(cudnnConvolutionBackwardFilter(handle_, &one, d.x, x, d.y, dy, d.conv, choice->algo,
                                                       context_.workspace(), workspace_bytes_, &beta, d.w,
                                                       dw));
  }

  // The passes share one descriptor, so each sets its own math (chosen_math) before it runs.
  template <typename Algo>
  void use_math(const Choice<Algo>& choice) {
    if (descriptors_.tensor_ops())
      ESPRESSO_CUDA_CHECK(cudnnSetConvolutionMathType(descriptors_.conv, chosen_math(choice)));
  }

  StreamContext& context_;
  cudnnHandle_t handle_;
  DType dtype_;
  std::int64_t filter_elements_ = 0;
  std::size_t scratch_offset_ = 0;  // of the filter gradient's scratch in the shared workspace (fp16, bf16)
  Descriptors descriptors_;
  std::optional<Choice<cudnnConvolutionFwdAlgo_t>> forward_;
  std::optional<Choice<cudnnConvolutionBwdDataAlgo_t>> data_;
  std::optional<Choice<cudnnConvolutionBwdFilterAlgo_t>> filter_;
  std::size_t workspace_bytes_ = 0;  // of the context's shared workspace
};

}  // namespace

std::unique_ptr<ConvTactic> make_cudnn_conv(const ConvProblem& p, StreamContext& context) {
  if (!fits_int(p)) return nullptr;
  auto tactic = std::make_unique<CudnnConv>(DType::f32, context);
  if (!tactic->prepare(p)) return nullptr;
  return tactic;
}

std::unique_ptr<TypedConvTactic> make_cudnn_typed_conv(const ConvProblem& p, DType dtype,
                                                       StreamContext& context) {
  if (!fits_int(p)) return nullptr;
  auto tactic = std::make_unique<CudnnConv>(dtype, context);
  if (!tactic->prepare(p)) return nullptr;
  return tactic;
}

std::unique_ptr<ConvGradients> make_cudnn_gradients(const ConvProblem& p, unsigned passes,
                                                    StreamContext& context) {
  if (!fits_int(p)) return nullptr;
  auto gradients = std::make_unique<CudnnGradients>(DType::f32, context);
  if (!gradients->prepare(p, passes, DType::f32)) return nullptr;
  gradients->reserve();
  return gradients;
}

std::unique_ptr<TypedConvGradients> make_cudnn_typed_gradients(const ConvProblem& p, DType dtype,
                                                               StreamContext& context) {
  if (!fits_int(p)) return nullptr;
  auto gradients = std::make_unique<CudnnGradients>(dtype, context);
  if (!gradients->prepare(p, kDataPass | kFilterPass, dtype)) return nullptr;
  gradients->reserve();
  return gradients;
}

float cudnn_backward_ms(const ConvProblem& p, DType dtype, DType plan_dtype, StreamContext& context) {
  if (!fits_int(p)) return 0.0f;
  CudnnGradients gradients(dtype, context);
  return gradients.prepare(p, kDataPass | kFilterPass, plan_dtype) ? gradients.measured_ms() : 0.0f;
}

}  // namespace espresso::cuda
