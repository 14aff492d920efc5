// The Vulkan backend's device and stream. A DeviceContext per physical device holds the logical device,
// its queue, the memory allocator, the transfer path and the compute pipelines; a StreamContext is one
// Net's queue of work, recorded into command buffers.
//
// Memory: device memory is handed out as addresses in a private address range, one span per
// VkBuffer "block" (large blocks shared by sub-allocation; big tensors get one of their own). Tensors
// and the Net's arena do pointer arithmetic on them as on any device pointer; kernels resolve an
// address back to its buffer and offset when they record their work. The addresses are never
// dereferenced on the host.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.h"
#include "backends/vulkan/api.h"

namespace espresso::vulkan {

// Usable Vulkan devices in this process; 0 without loader or driver.
int device_count();
// Throws DeviceError unless `device` is a usable Vulkan device, saying why.
void require_device(Device device);
std::vector<DeviceInfo> list_devices();

// A device address resolved to its block.
struct Resolved {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceSize offset = 0;      // of the address within the buffer
  VkDeviceSize block_size = 0;  // the buffer's size
};

struct Pipeline {
  VkPipeline pipeline = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  std::uint32_t bindings = 0;
};

// Every shader's push constants fit in this many bytes (the minimum Vulkan guarantees).
inline constexpr std::uint32_t kPushConstantBytes = 128;

class DeviceContext {
 public:
  explicit DeviceContext(int index);
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  int index() const { return index_; }
  const PhysicalDevice& physical() const { return *physical_; }
  VkDevice device() const { return device_; }

  // Device-local memory; `purpose` goes into the out-of-memory error.
  std::shared_ptr<void> allocate(std::size_t bytes, const std::string& purpose);
  Resolved resolve(const void* address) const;
  MemoryStats stats() const;
  // Caps the device memory this process allocates (blocks included); 0 lifts the cap. Tests use it to
  // provoke out-of-memory; ESPRESSO_VULKAN_MEMORY_LIMIT (bytes) sets it at start.
  void set_memory_limit(std::size_t bytes);

  // Synchronous transfers through the staging buffer, each on the queue after everything submitted
  // before it.
  void upload(void* destination, const void* source, std::size_t bytes);
  void download(void* destination, const void* source, std::size_t bytes);
  void copy_device(void* destination, const void* source, std::size_t bytes);
  void fill_zero(void* destination, std::size_t bytes);

  // Device memory that kernels make from host tensors (a convolution's packed weights), shared by every
  // stream of the device while one holds it, as resident weights are: found again by `key` (the host
  // tensor's address and version, and how it was transformed); `make` allocates and fills it on a miss.
  std::shared_ptr<void> shared_transform(const std::string& key,
                                         const std::function<std::shared_ptr<void>()>& make);

  // The compute pipeline of an embedded shader with `bindings` storage buffers, made once.
  const Pipeline& pipeline(std::string_view shader, std::uint32_t bindings);

  // Submits command buffers and signals `fence`; the queue is shared by every stream of the device.
  void submit(const std::vector<VkCommandBuffer>& buffers, VkFence fence);
  // Writes the pipeline cache to disk when pipelines were made since the last save.
  void save_pipeline_cache();

 private:
  struct Block {
    VkBuffer buffer = VK_NULL_HANDLE;
    VkDeviceMemory memory = VK_NULL_HANDLE;
    std::size_t size = 0;
    std::uintptr_t base = 0;
    bool dedicated = false;
    std::size_t used = 0;
    std::map<std::size_t, std::size_t> free;  // offset → size, coalesced
  };
  void init_staging();
  void init_pipeline_cache();
  Block* new_block(std::size_t size, bool dedicated, const std::string& purpose, std::size_t asked);
  bool release_empty_blocks();
  void destroy_block(std::uintptr_t base);
  void release(std::uintptr_t address, std::size_t size);
  std::uint32_t memory_type(std::uint32_t allowed, VkMemoryPropertyFlags wanted, VkMemoryPropertyFlags fallback) const;
  // Records `record` into the transfer command buffer, submits it and waits. Holds transfer_mutex_.
  template <typename Record>
  void run_transfer(Record record);

  int index_;
  const PhysicalDevice* physical_;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  std::mutex queue_mutex_;

  mutable std::mutex memory_mutex_;
  std::map<std::uintptr_t, Block> blocks_;
  std::uintptr_t next_base_;
  std::size_t allocated_bytes_ = 0;  // in blocks
  std::size_t in_use_bytes_ = 0;
  std::size_t limit_bytes_ = 0;
  std::uint32_t device_memory_type_ = 0;

  std::mutex transfer_mutex_;
  VkCommandPool transfer_pool_ = VK_NULL_HANDLE;
  VkCommandBuffer transfer_buffer_ = VK_NULL_HANDLE;
  VkFence transfer_fence_ = VK_NULL_HANDLE;
  VkBuffer staging_ = VK_NULL_HANDLE;
  VkDeviceMemory staging_memory_ = VK_NULL_HANDLE;
  void* staging_mapped_ = nullptr;

  std::mutex transform_mutex_;
  std::map<std::string, std::weak_ptr<void>, std::less<>> transforms_;

  std::mutex pipeline_mutex_;
  std::map<std::string, Pipeline, std::less<>> pipelines_;
  VkPipelineCache pipeline_cache_ = VK_NULL_HANDLE;
  std::string pipeline_cache_path_;
  bool pipeline_cache_dirty_ = false;
};

// Whether the library has the SPIR-V shader `name` built in (variants included: "gemv_f16_subgroup").
bool has_shader(std::string_view name);

// The context of Vulkan device `index`, made on first use and never destroyed.
DeviceContext& device_context(int index);

// One buffer a dispatch reads or writes: a device range.
// A range of device memory a shader binds; `element_bytes` is the size of the elements its offset counts
// (2 for the fp16 activations of _f16 shaders).
struct Buffer {
  const void* address;
  std::size_t bytes;
  std::uint32_t element_bytes = sizeof(float);
};

inline Buffer buffer(const Tensor& t) {
  return {t.raw(), t.bytes(), static_cast<std::uint32_t>(dtype_size(t.dtype()))};
}

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
  bool has_capture() const override { return captured_ != VK_NULL_HANDLE; }
  void replay() override;
  void drop_capture() override;
  void mark_start() override;
  void mark_end() override;
  double elapsed_ms() override;
  void fill(Tensor& tensor, float value) override;
  // fp32 ↔ fp16 (to_f16.comp, to_f32.comp): the casts between the layers of an fp16 net and those that
  // run in fp32.
  void convert(const Tensor& source, Tensor& destination) override;
  void apply_update(const train::UpdateRule& rule, Tensor& value, Tensor& grad, Tensor& history,
                    Tensor* second) override;
  double sum_of_squares(const Tensor& tensor) override;

  DeviceContext& context() { return context_; }
  // The type the kernels made now compute in (VulkanKernel reads it once): f16 while the backend makes a
  // kernel for an fp16 net, f32 otherwise.
  void set_kernel_dtype(DType dtype) { kernel_dtype_ = dtype; }
  DType kernel_dtype() const { return kernel_dtype_; }
  // Records one dispatch of `shader` over `groups`: its storage buffers bound in order, and push
  // constants made of each buffer's element offset (uint, in its elements) followed by `params`.
  void dispatch(std::string_view shader, const std::vector<Buffer>& buffers, const void* params,
                std::size_t params_bytes, std::uint32_t groups_x, std::uint32_t groups_y = 1,
                std::uint32_t groups_z = 1);
  template <typename Params>
  void dispatch(std::string_view shader, const std::vector<Buffer>& buffers, const Params& params,
                std::uint32_t groups_x, std::uint32_t groups_y = 1, std::uint32_t groups_z = 1) {
    dispatch(shader, buffers, &params, sizeof(Params), groups_x, groups_y, groups_z);
  }
  // The device time of the work `record` records, run alone (the stream waits before and after): GPU
  // timestamps, host time where the device has none. Kernels time the ways they could do their work when
  // they are made (not while a capture records; between mark_start and mark_end the timing counts in).
  double time_ms(const std::function<void()>& record);
  // Records a device-to-device copy.
  void copy(const void* source, void* destination, std::size_t bytes);
  // The device copy of a CPU weight tensor, uploaded on first request and kept for the stream's life
  // (or the shared resident copy). A tensor already on this device is returned as is.
  const Tensor& device_weights(const Tensor& host, const std::string& owner);
  // Device memory a kernel keeps for its life (constants, split-k partial sums).
  Tensor scratch(const Shape& shape, const std::string& owner);
  // One workspace for every kernel of this stream (Winograd's transformed tiles): they run one after
  // another, so the largest need is enough. Kernels reserve what they need when they are made and take
  // workspace() when they record, never keeping the address: a larger reservation replaces the buffer
  // (or throws DeviceError, out of memory, leaving it as it was).
  void reserve_workspace(std::size_t bytes);
  const void* workspace() const { return workspace_.get(); }
  std::size_t workspace_bytes() const override { return workspace_bytes_; }

 private:
  struct Descriptors {
    std::vector<VkDescriptorPool> pools;
    std::size_t current = 0;
  };
  VkCommandBuffer recording();
  void end_current();
  VkDescriptorSet allocate_set(Descriptors& descriptors, VkDescriptorSetLayout layout);
  void reset_descriptors(Descriptors& descriptors);
  void destroy_descriptors(Descriptors& descriptors);
  void barrier(VkCommandBuffer buffer);
  // The time between timestamp queries `first` and `first + 1`, once written; nullopt without timestamps.
  std::optional<double> timestamps_ms(std::uint32_t first);

  Device device_;
  DeviceContext& context_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  std::vector<VkCommandBuffer> free_buffers_;
  VkCommandBuffer current_ = VK_NULL_HANDLE;
  std::vector<VkCommandBuffer> pending_;   // ended, to submit at synchronize()
  std::vector<VkCommandBuffer> in_flight_; // submitted with the captured one excluded
  bool capturing_ = false;
  VkCommandBuffer captured_ = VK_NULL_HANDLE;
  Descriptors transient_, capture_descriptors_;
  VkQueryPool timestamps_ = VK_NULL_HANDLE;
  bool marked_ = false;
  // Set by mark_end(): only then has the end timestamp been recorded. A net that hands tensors to the CPU
  // synchronizes between the marks, and waiting for the unwritten end query would never return.
  bool end_marked_ = false;
  double host_start_ms_ = 0, host_end_ms_ = 0, elapsed_ms_ = 0;
  std::shared_ptr<const DeviceWeights> shared_weights_;
  struct WeightCopy {
    Tensor host;
    Tensor device;
  };
  std::map<const void*, WeightCopy> weights_;
  DType kernel_dtype_ = DType::f32;
  std::shared_ptr<void> workspace_;
  std::size_t workspace_bytes_ = 0;
  std::vector<std::shared_ptr<void>> retired_workspaces_;  // replaced while a capture held their addresses
};

}  // namespace espresso::vulkan
