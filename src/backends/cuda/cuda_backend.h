// The CUDA backend as the rest of espresso sees it: no CUDA types, so the core, the executor and
// the tests use it the same way in builds with and without CUDA (those get the versions in
// backends/cuda_unavailable/, which report the backend missing).
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/kernel.h"
#include "espresso/device_weights.h"
#include "espresso/tensor.h"
#include "train/update_rule.h"

namespace espresso::cuda {

// Whether this build contains the CUDA backend.
bool built();
// GPUs visible to this process; 0 without a GPU or without CUDA in the build.
int device_count();
// Throws DeviceError unless `device` is a usable GPU ("CUDA backend not built", "no CUDA device
// found", or the index is out of range).
void require_device(Device device);

// Device memory from the caching pool. `purpose` (a layer, "activation arena") goes into the
// out-of-memory error. Freed memory returns to the pool's cache once the last owner drops it, so
// owners must not drop memory that queued work still uses.
std::shared_ptr<void> allocate(std::size_t bytes, Device device, const std::string& purpose = "");

// While any thread records a CUDA graph, CUDA refuses calls that synchronise the device implicitly
// (cudaMalloc/cudaFree, pinned allocations, creating or destroying streams and cuBLAS/cuDNN handles)
// and invalidates the recording. Captures and those calls hold this lock; it is recursive because the
// capturing thread itself may reach them.
std::recursive_mutex& capture_exclusion();
// Copies `bytes` between any two devices (cpu included); returns once the copy has completed.
void copy(void* destination, Device destination_device, const void* source, Device source_device,
          std::size_t bytes);
// Sets device memory to zero; returns once done.
void fill_zero(void* destination, Device device, std::size_t bytes);

// One host range and where it goes on the device.
struct UploadPiece {
  void* device_destination = nullptr;
  const void* host_source = nullptr;
  std::size_t bytes = 0;
};
// Copies every piece to `device` as one stream of pinned staging chunks: small pieces share a chunk,
// and the source pages of chunk k+1 are read ahead (an mmap'ed file pages in) while chunk k copies.
// Returns once everything has arrived.
void upload(Device device, const std::vector<UploadPiece>& pieces);

struct PoolStats {
  std::size_t in_use_bytes = 0;
  std::size_t cached_bytes = 0;
};
PoolStats pool_stats(Device device);

// One stream on one GPU with its library handles; one per Net. Work is queued on the stream and
// only synchronize() waits for it.
class Context {
 public:
  virtual ~Context() = default;
  virtual Device device() const = 0;
  // Records the launches that follow into a CUDA graph instead of running them.
  virtual void begin_capture() = 0;
  // Ends recording and makes the graph ready to launch.
  virtual void end_capture() = 0;
  // Ends a recording that failed, dropping what was recorded.
  virtual void abort_capture() = 0;
  virtual bool has_graph() const = 0;
  virtual void launch_graph() = 0;
  virtual void drop_graph() = 0;
  // Waits for all queued work; throws DeviceError for errors of kernels that ran asynchronously.
  virtual void synchronize() = 0;
  // Events around queued work (never inside a capture): after synchronize(), elapsed_ms() is the device
  // time from the start mark to the end mark.
  virtual void mark_start() = 0;
  virtual void mark_end() = 0;
  virtual double elapsed_ms() = 0;
};

// Throws DeviceError when the device is unusable. Kernels take the device copies of weights from
// `shared_weights` when given (it must be on `device`) and upload the others themselves.
std::unique_ptr<Context> create_context(Device device,
                                        std::shared_ptr<const DeviceWeights> shared_weights = nullptr);

// ---- training (training.cu): queued on the context's stream ----
// Sets every element of an f32 device tensor to `value`.
void fill(Context& context, Tensor& tensor, float value);
// One solver step (train/update_rule.h) over a device blob: value, grad and history updated in place;
// `second` is the second history of AdaDelta and Adam, nullptr otherwise.
void apply_update(Context& context, const train::UpdateRule& rule, Tensor& value, Tensor& grad,
                  Tensor& history, Tensor* second);
// Σ x² over an f32 device tensor, accumulated in double; waits for the result.
double sum_of_squares(Context& context, const Tensor& tensor);

// Whether the layer type has a CUDA kernel at all.
bool has_kernel(const std::string& layer_type);
// Throws UnsupportedError naming every layer without a CUDA kernel, or DeviceError when CUDA is
// not built.
void check_supported(const std::vector<const Layer*>& layers);
// The CUDA kernel for this layer and these input shapes, or nullptr for configurations it does
// not cover. Kernels queue their work on the context's stream.
std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs, Context& context);

}  // namespace espresso::cuda
