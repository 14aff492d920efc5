#include "backends/cuda/context.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "espresso/errors.h"

namespace espresso::cuda {
namespace {

// cuBLAS's own recommendation for Hopper; handed over explicitly so that it never allocates while
// a graph is being captured.
constexpr std::size_t kCublasWorkspace = std::size_t{32} << 20;

// Creating a cuBLAS or cuDNN handle takes milliseconds, a large part of a small model's cold load, so
// contexts borrow handles from a per-device pool and give them back when they go (PyTorch pools them
// too). A handle serves one context at a time; the borrower binds it to its own stream and workspace.
template <typename Handle>
class HandlePool {
 public:
  std::optional<Handle> take(int device) {
    const std::lock_guard lock(mutex_);
    std::vector<Handle>& free = free_[device];
    if (free.empty()) return std::nullopt;
    const Handle handle = free.back();
    free.pop_back();
    return handle;
  }
  void give(int device, Handle handle) {
    const std::lock_guard lock(mutex_);
    free_[device].push_back(handle);
  }

 private:
  std::mutex mutex_;
  std::map<int, std::vector<Handle>> free_;
};

// Never destroyed: handles stay valid until the process ends, whatever the order of static destructors.
HandlePool<cublasHandle_t>& cublas_handles() {
  static auto* pool = new HandlePool<cublasHandle_t>;
  return *pool;
}
HandlePool<cudnnHandle_t>& cudnn_handles() {
  static auto* pool = new HandlePool<cudnnHandle_t>;
  return *pool;
}

}  // namespace

// Captures happen once per plan and the other holders are set-up calls, so taking turns costs little.
std::recursive_mutex& capture_exclusion() {
  static std::recursive_mutex exclusion;
  return exclusion;
}

StreamContext::StreamContext(Device device, std::shared_ptr<const DeviceWeights> shared_weights)
    : device_(device), shared_weights_(std::move(shared_weights)) {
  require_device(device);
  if (shared_weights_ && shared_weights_->device() != device) {
    throw DeviceError("weights resident on " + shared_weights_->device().str() + " cannot serve a net on " +
                      device.str());
  }
  DeviceGuard guard(device_.index);
  ESPRESSO_CUDA_CHECK(
      cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount, device_.index));
  const std::lock_guard exclusion(capture_exclusion());
  ESPRESSO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  ESPRESSO_CUDA_CHECK(cudaEventCreate(&start_));
  ESPRESSO_CUDA_CHECK(cudaEventCreate(&end_));
}

StreamContext::~StreamContext() {
  // Errors cannot be reported from a destructor; everything goes regardless, the library handles back
  // to their pool.
  const std::lock_guard exclusion(capture_exclusion());
  cudaSetDevice(device_.index);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (graph_ != nullptr) cudaGraphExecDestroy(graph_);
  if (cudnn_ != nullptr) cudnn_handles().give(device_.index, cudnn_);
  if (cublas_ != nullptr) cublas_handles().give(device_.index, cublas_);
  if (start_ != nullptr) cudaEventDestroy(start_);
  if (end_ != nullptr) cudaEventDestroy(end_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void StreamContext::begin_capture() {
  drop_capture();
  std::unique_lock lock(capture_exclusion());
  DeviceGuard guard(device_.index);
  // Thread-local mode: only this thread's unsafe calls (cudaMalloc, say) are refused meanwhile.
  ESPRESSO_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  capture_lock_ = std::move(lock);
}

void StreamContext::end_capture() {
  const std::unique_lock lock = std::move(capture_lock_);
  DeviceGuard guard(device_.index);
  cudaGraph_t graph = nullptr;
  ESPRESSO_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
  const cudaError_t status = cudaGraphInstantiate(&graph_, graph, 0);
  cudaGraphDestroy(graph);
  if (status != cudaSuccess) graph_ = nullptr;
  check(status, "cudaGraphInstantiate");
}

void StreamContext::abort_capture() {
  const std::unique_lock lock = std::move(capture_lock_);
  DeviceGuard guard(device_.index);
  cudaGraph_t graph = nullptr;
  if (cudaStreamEndCapture(stream_, &graph) == cudaSuccess && graph != nullptr) cudaGraphDestroy(graph);
  cudaGetLastError();
}

void StreamContext::replay() {
  if (graph_ == nullptr) throw DeviceError("no CUDA graph has been captured on " + device_.str());
  DeviceGuard guard(device_.index);
  ESPRESSO_CUDA_CHECK(cudaGraphLaunch(graph_, stream_));
}

void StreamContext::drop_capture() {
  if (graph_ == nullptr) return;
  DeviceGuard guard(device_.index);
  ESPRESSO_CUDA_CHECK(cudaGraphExecDestroy(graph_));
  graph_ = nullptr;
  // Workspaces replaced while the graph could replay go once its last replay is done.
  if (!retired_workspaces_.empty()) {
    ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(stream_));
    retired_workspaces_.clear();
  }
}

void StreamContext::synchronize() {
  DeviceGuard guard(device_.index);
  ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void StreamContext::mark_start() {
  DeviceGuard guard(device_.index);
  ESPRESSO_CUDA_CHECK(cudaEventRecord(start_, stream_));
}

void StreamContext::mark_end() {
  DeviceGuard guard(device_.index);
  ESPRESSO_CUDA_CHECK(cudaEventRecord(end_, stream_));
}

double StreamContext::elapsed_ms() {
  float ms = 0.0f;
  ESPRESSO_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, end_));
  return ms;
}

cublasHandle_t StreamContext::cublas() {
  if (cublas_ == nullptr) {
    const std::lock_guard exclusion(capture_exclusion());
    DeviceGuard guard(device_.index);
    cublasHandle_t handle = nullptr;
    if (std::optional<cublasHandle_t> pooled = cublas_handles().take(device_.index)) {
      handle = *pooled;
    } else {
      ESPRESSO_CUDA_CHECK(cublasCreate(&handle));
    }
    // Full fp32 products unless TF32 was asked for: TF32 changes results against the CPU by ~1e-3. The
    // default math keeps fp32 (no TF32 without CUBLAS_TF32_TENSOR_OP_MATH, as in PyTorch); pedantic math
    // also kept cuBLAS to its slow reference kernels: NIN's last 1x1 convolution trained 6x slower than
    // through cuDNN, ResNet-18's InnerProduct backward took 0.85 ms. Set on every handle taken, since a
    // pooled one may come from a TF32 net.
    ESPRESSO_CUDA_CHECK(cublasSetMathMode(handle, tf32_ ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    cublas_ = handle;
    ESPRESSO_CUDA_CHECK(cublasSetStream(cublas_, stream_));
    cublas_workspace_ = allocate(kCublasWorkspace, device_, "the cuBLAS workspace");
    ESPRESSO_CUDA_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_.get(), kCublasWorkspace));
  }
  return cublas_;
}

bool StreamContext::allow_tf32(bool allow) {
  tf32_ = allow;
  if (cublas_ != nullptr)
    ESPRESSO_CUDA_CHECK(cublasSetMathMode(cublas_, tf32_ ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return true;
}

void StreamContext::plan_workspaces(bool planning) {
  planning_workspaces_ = planning;
  requested_workspace_ = 0;
}

std::size_t StreamContext::take_workspace_request() { return std::exchange(requested_workspace_, 0); }

void StreamContext::lend_workspace(void* memory, std::size_t bytes) {
  lent_ = bytes > 0 ? memory : nullptr;
  lent_bytes_ = lent_ != nullptr ? bytes : 0;
}

void StreamContext::reserve_workspace(std::size_t bytes) {
  if (planning_workspaces_) {
    requested_workspace_ = std::max(requested_workspace_, bytes);
    return;
  }
  if (lent_ != nullptr) {
    if (bytes <= lent_bytes_) return;
    lend_workspace(nullptr, 0);  // more than the plan knew of: the stream's own from here on
  }
  if (bytes <= workspace_bytes_) return;
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  ESPRESSO_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capturing));
  if (capturing != cudaStreamCaptureStatusNone || graph_ != nullptr) {
    // The recording (or the recorded graph, replayed later) holds the old buffer's address, and
    // synchronising now would end a recording: the old buffer lives on with the context.
    if (workspace_) retired_workspaces_.push_back(std::move(workspace_));
  } else if (workspace_) {
    ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  workspace_.reset();
  workspace_bytes_ = 0;  // until the new buffer is there: a failed allocation leaves none
  workspace_ = allocate(bytes, device_, "the cuDNN workspace of a " + device_.str() + " stream");
  workspace_bytes_ = bytes;
}

cudnnHandle_t StreamContext::cudnn() {
  if (cudnn_ == nullptr) {
    const std::lock_guard exclusion(capture_exclusion());
    DeviceGuard guard(device_.index);
    cudnnHandle_t handle = nullptr;
    if (std::optional<cudnnHandle_t> pooled = cudnn_handles().take(device_.index)) {
      handle = *pooled;
    } else {
      ESPRESSO_CUDA_CHECK(cudnnCreate(&handle));
    }
    cudnn_ = handle;
    ESPRESSO_CUDA_CHECK(cudnnSetStream(cudnn_, stream_));
  }
  return cudnn_;
}

const Tensor& StreamContext::device_weights(const Tensor& host, const std::string& owner) {
  if (!host.device().is_cpu()) {
    // Training keeps the weights on the GPU, where the solver updates them in place.
    if (host.device() != device_)
      throw DeviceError("the weights of " + owner + " are on " + host.device().str() + ", not " + device_.str());
    return host;
  }
  if (shared_weights_) {
    if (const Tensor* shared = shared_weights_->find(host)) return *shared;
  }
  auto it = weights_.find(host.raw());
  if (it != weights_.end()) return it->second.device;
  auto memory = allocate(host.bytes(), device_, "the weights of " + owner);
  Tensor copy = Tensor::wrap(memory.get(), host.shape(), host.dtype(), device_, memory);
  copy.copy_from(host);
  WeightCopy& entry = weights_[host.raw()];
  entry = {host, std::move(copy)};
  return entry.device;
}

unsigned elementwise_blocks(const StreamContext& context, std::int64_t work, int threads) {
  const std::int64_t needed = (work + threads - 1) / threads;
  const std::int64_t full_gpu = std::int64_t{context.multiprocessors()} * 8;
  return static_cast<unsigned>(std::clamp<std::int64_t>(needed, 1, full_gpu));
}

}  // namespace espresso::cuda
