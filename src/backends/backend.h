// Backend: what the executor needs from a kind of device. CPU and CUDA are its implementations; the
// registry (backends/registry.h) lists those this build has. A backend says which layers it supports,
// makes their kernels, and owns the device's memory; a Stream is one ordered queue of its work, one per
// Net, with capture and replay where the device can.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backends/kernel.h"
#include "backends/update_rule.h"
#include "core/device_memory.h"
#include "espresso/device_weights.h"
#include "espresso/devices.h"
#include "espresso/tensor.h"

namespace espresso {

// One host range and where it goes on the device.
struct UploadPiece {
  void* device_destination = nullptr;
  const void* host_source = nullptr;
  std::size_t bytes = 0;
};

struct MemoryStats {
  std::size_t in_use_bytes = 0;
  std::size_t cached_bytes = 0;  // freed, kept for reuse
  std::size_t peak_in_use_bytes = 0;  // the most in use at once since start or reset_peak_memory()
  // What was in use at that peak, by the purpose each allocation named, largest first.
  std::vector<std::pair<std::string, std::size_t>> peak_by_purpose;
};

// An ordered queue of work on one device. On the CPU work runs as it is queued.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual Device device() const = 0;
  // Bytes of scratch memory the stream holds for its kernels to share (cuDNN's workspace), for memory
  // reports.
  virtual std::size_t workspace_bytes() const { return 0; }
  // Workspaces from a net's memory plan (training nets): between plan_workspaces(true) and (false) the
  // workspace each kernel reserves while it is made is noted, not allocated, and take_workspace_request()
  // hands it over (the most reserved since the last call). The net places it in its arena for the moments
  // that kernel runs and lends it before each of them (lend_workspace; nullptr, 0: none lent, the stream's
  // own). A kernel that reserves more than it was lent runs on the stream's own workspace.
  virtual void plan_workspaces(bool /*planning*/) {}
  virtual std::size_t take_workspace_request() { return 0; }
  virtual void lend_workspace(void* /*memory*/, std::size_t /*bytes*/) {}
  // Waits for all queued work; throws DeviceError for errors of work that ran asynchronously.
  virtual void synchronize() = 0;

  // Recording the queued work once and replaying it (CUDA graphs) where the device can.
  virtual bool can_capture() const { return false; }
  // Records the work that follows instead of running it.
  virtual void begin_capture();
  // Ends recording and makes the recording ready to launch.
  virtual void end_capture();
  // Ends a recording that failed, dropping what was recorded.
  virtual void abort_capture();
  virtual bool has_capture() const { return false; }
  virtual void replay();
  virtual void drop_capture() {}

  // Marks around queued work (never inside a capture): after synchronize(), elapsed_ms() is the time
  // from the start mark to the end mark.
  virtual void mark_start() = 0;
  virtual void mark_end() = 0;
  virtual double elapsed_ms() = 0;

  // Training, on f32 tensors of this stream's device.
  // Sets every element to `value` (also f16 and bf16 tensors where the device has them).
  virtual void fill(Tensor& tensor, float value) = 0;
  // One solver step over a blob: value, grad and history updated in place; `second` is the second
  // history of AdaDelta and Adam, nullptr otherwise.
  virtual void apply_update(const train::UpdateRule& rule, Tensor& value, Tensor& grad, Tensor& history,
                            Tensor* second) = 0;
  // One solver step over each blob listed (a net's parameters): by default apply_update for each; a
  // backend may queue them together.
  struct BlobUpdate {
    train::UpdateRule rule;
    Tensor* value;
    Tensor* grad;
    Tensor* history;
    Tensor* second;  // nullptr but for AdaDelta and Adam
  };
  virtual void apply_updates(const std::vector<BlobUpdate>& updates);
  // Σ x², accumulated in double; waits for the result.
  virtual double sum_of_squares(const Tensor& tensor) = 0;

  // Mixed precision. Queues destination = source converted to destination's dtype (f32, f16, bf16;
  // same element count, both on this stream's device), rounding to nearest even. The default throws
  // UnsupportedError.
  virtual void convert(const Tensor& source, Tensor& destination);
  // convert() that also moves the channels of a 4-D tensor (shape N, C, H, W) to the last axis in memory
  // (N, H, W, C: channels-last plans), or back from there when `to_channels_last` is false. The default
  // throws UnsupportedError.
  virtual void convert_layout(const Tensor& source, Tensor& destination, bool to_channels_last);
  // Lets the convolutions and matrix products of kernels made afterwards round their inputs to TF32
  // on tensor cores (Precision::tf32). Returns false where the device has no such mode.
  virtual bool allow_tf32(bool /*allow*/) { return false; }
  // Mixed precision training. Queues destination += source, converted as convert() does. The default
  // throws UnsupportedError.
  virtual void add_converted(const Tensor& source, Tensor& destination);
  // Queues the conversion of every weight copy made in a low precision (kernels' converted weights) from
  // its fp32 weights again, after a solver moved them.
  virtual void refresh_converted_weights() {}
  // Queues flags[i] = 1 (an i32 tensor on this device, one element per tensor) when some element of the f32
  // tensors[i] is not finite; leaves it alone otherwise. The default throws UnsupportedError.
  virtual void flag_non_finite(const std::vector<Tensor>& tensors, Tensor& flags);
};

// Whether storing a tensor channels-last changes its bytes: 4-D, with more than one channel and more than
// one position. Channels-last plans convert only such tensors, and ask for channels-last kernels only
// for layers that read or write one.
inline bool layout_sensitive(const Shape& shape) {
  return shape.rank() == 4 && shape[1] > 1 && shape[2] * shape[3] > 1;
}

// One row of a backend's kernel table: generated from the `make_<stem>` factories in its folder
// (cmake/generate_tables.cmake), so each backend only states its factory signature.
template <typename Factory>
struct KernelEntry {
  std::string_view type;
  Factory create;
};

// The row for a layer type, or nullptr where the backend has no kernel of its own for it.
template <typename Factory, std::size_t N>
const KernelEntry<Factory>* find_kernel(const KernelEntry<Factory> (&table)[N], std::string_view type) {
  for (const KernelEntry<Factory>& entry : table) {
    if (entry.type == type) return &entry;
  }
  return nullptr;
}

class Backend : public DeviceMemory {
 public:
  // "cpu", "cuda": the name devices are spelled with.
  virtual const char* name() const = 0;
  virtual DeviceType type() const = 0;
  // Devices of this type this process can use; 0 without hardware or driver.
  virtual int device_count() const = 0;
  // Throws DeviceError unless `device` is usable, saying why.
  virtual void require_device(Device device) const = 0;
  virtual std::vector<DeviceInfo> devices() const = 0;

  // Copies host ranges to `device`; returns once everything has arrived. The default copies piece by
  // piece.
  virtual void upload(Device device, const std::vector<UploadPiece>& pieces);
  // What this backend's allocator holds on `device`; zeros where it keeps no cache.
  virtual MemoryStats memory_stats(Device) const { return {}; }
  // Starts peak_in_use_bytes again from what is in use now.
  virtual void reset_peak_memory(Device) {}

  // A queue of work on `device`. Kernels made for it take the device copies of weights from
  // `resident_weights` when given (on `device`) and upload the others themselves.
  virtual std::unique_ptr<Stream> create_stream(Device device,
                                                std::shared_ptr<const DeviceWeights> resident_weights) = 0;
  // Whether this backend has a kernel for the layer's type in `dtype`. make_kernel may still decline
  // particular shapes; the executor then falls back too.
  virtual bool supports(const Layer& layer, const std::vector<Shape>& inputs, DType dtype) const = 0;
  // The kernel for this layer and these input shapes, queuing its work on `stream` (made by this
  // backend), or nullptr for configurations it does not cover.
  virtual std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs,
                                              Stream& stream) = 0;
  // The kernel computing in `dtype` (its inputs and outputs in that type, its weights converted once,
  // fp32 accumulation), or nullptr; f32 is make_kernel. The default has only f32 kernels.
  virtual std::unique_ptr<Kernel> make_typed_kernel(const Layer& layer, const std::vector<Shape>& inputs,
                                                    DType dtype, Stream& stream) {
    return dtype == DType::f32 ? make_kernel(layer, inputs, stream) : nullptr;
  }
  // Channels-last plans (fp16/bf16 inference where the backend has them): the kernel in `dtype` that
  // stores every 4-D tensor it reads and writes as N, H, W, C (their shapes still say N, C, H, W), the
  // others as make_typed_kernel's do; nullptr where it has none for this layer, shapes or type.
  virtual std::unique_ptr<Kernel> make_channels_last_kernel(const Layer& /*layer*/,
                                                            const std::vector<Shape>& /*inputs*/,
                                                            DType /*dtype*/, Stream& /*stream*/) {
    return nullptr;
  }
};

}  // namespace espresso
