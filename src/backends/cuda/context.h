// The concrete CUDA context that kernels work with: the Net's stream, its cuBLAS and cuDNN
// handles, and the device copies of layer weights.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "backends/cuda/check.h"
#include "backends/cuda/cuda_backend.h"

namespace espresso::cuda {

class StreamContext final : public Stream {
 public:
  StreamContext(Device device, std::shared_ptr<const DeviceWeights> shared_weights);
  ~StreamContext() override;
  StreamContext(const StreamContext&) = delete;
  StreamContext& operator=(const StreamContext&) = delete;

  Device device() const override { return device_; }
  void synchronize() override;
  bool can_capture() const override { return true; }
  void begin_capture() override;
  void end_capture() override;
  void abort_capture() override;
  bool has_capture() const override { return graph_ != nullptr; }
  void replay() override;
  void drop_capture() override;
  void mark_start() override;
  void mark_end() override;
  double elapsed_ms() override;
  // training.cu
  void fill(Tensor& tensor, float value) override;
  void apply_update(const train::UpdateRule& rule, Tensor& value, Tensor& grad, Tensor& history,
                    Tensor* second) override;
  double sum_of_squares(const Tensor& tensor) override;
  // convert.cu
  void convert(const Tensor& source, Tensor& destination) override;
  void convert_layout(const Tensor& source, Tensor& destination, bool to_channels_last) override;
  void add_converted(const Tensor& source, Tensor& destination) override;
  void refresh_converted_weights() override;
  void apply_updates(const std::vector<BlobUpdate>& updates) override;
  void flag_non_finite(const std::vector<Tensor>& tensors, Tensor& flags) override;
  bool allow_tf32(bool allow) override;
  // Precision::tf32: convolutions and GEMMs made from now on may use TF32 tensor cores.
  bool tf32() const { return tf32_; }

  cudaStream_t stream() const { return stream_; }
  int multiprocessors() const { return multiprocessors_; }
  // Library handles are created on first use, bound to the stream. Kernels ask for them when they
  // are made, never first inside forward(), since a graph capture may be recording then.
  cublasHandle_t cublas();
  cudnnHandle_t cudnn();
  // One workspace for the library calls of every kernel on this stream (cuDNN convolutions): they run
  // one after another, so they can share it instead of each holding its own. Kernels reserve what they
  // need when they are made and take workspace() when they run, never keeping the pointer: a larger
  // reservation replaces the buffer (after the queued work that may use the old one, or keeping the
  // old one alive while a capture records or a recorded graph may replay). A workspace lent from a net's
  // plan (Stream::lend_workspace) stands in for it while it is large enough.
  void reserve_workspace(std::size_t bytes);
  void* workspace() const { return lent_ != nullptr ? lent_ : workspace_.get(); }
  std::size_t workspace_bytes() const override { return workspace_bytes_; }
  void plan_workspaces(bool planning) override;
  // True while a training plan collects the kernels' workspaces for its memory arena.
  bool planning_workspaces() const { return planning_workspaces_; }
  std::size_t take_workspace_request() override;
  void lend_workspace(void* memory, std::size_t bytes) override;
  // The device copy of a CPU weight tensor: the shared one when the model is resident, else uploaded
  // on first request and kept for the context's life (a CPU tensor's weights live as long as the Net's
  // layers and never change). A tensor already on this device (a training net's weights, which the
  // solver moves) is returned as is.
  const Tensor& device_weights(const Tensor& host, const std::string& owner);
  // The same converted to `dtype` (f16, bf16; f32 is device_weights), kept for the context's life and
  // converted again by refresh_converted_weights() (mixed precision training, before each forward).
  const Tensor& device_weights_as(const Tensor& host, DType dtype, const std::string& owner);

 private:
  Device device_;
  int multiprocessors_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  std::shared_ptr<void> cublas_workspace_;
  std::shared_ptr<void> workspace_;
  std::size_t workspace_bytes_ = 0;
  std::vector<std::shared_ptr<void>> retired_workspaces_;  // replaced while a capture was recording
  bool planning_workspaces_ = false;
  std::size_t requested_workspace_ = 0;  // while planning: the most reserved since the last take
  void* lent_ = nullptr;
  std::size_t lent_bytes_ = 0;
  cudaGraphExec_t graph_ = nullptr;
  cudaEvent_t start_ = nullptr, end_ = nullptr;
  // capture_exclusion(), held from begin_capture() to end_capture() or abort_capture(): one capture
  // per process at a time, and no device-synchronising set-up call meanwhile.
  std::unique_lock<std::recursive_mutex> capture_lock_;
  std::shared_ptr<const DeviceWeights> shared_weights_;
  struct WeightCopy {
    Tensor host;  // held so that its address cannot be reused by another tensor while cached
    Tensor device;
  };
  std::map<const void*, WeightCopy> weights_;
  struct ConvertedWeights {
    Tensor full;  // the device f32 weights, held so that their memory outlives the copy
    Tensor copy;
  };
  std::map<std::pair<const void*, DType>, ConvertedWeights>
      converted_weights_;  // by device f32 weights and type
  bool tf32_ = false;
};

// Grid size for element-wise kernels: enough blocks to fill the GPU, each looping over the rest.
unsigned elementwise_blocks(const StreamContext& context, std::int64_t work, int threads);

}  // namespace espresso::cuda
