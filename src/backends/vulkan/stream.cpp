// A Net's queue of Vulkan work. Kernels record dispatches into a command buffer; synchronize() submits
// what was recorded and waits. A capture records the plan's work into a command buffer of its own,
// which replay() submits again each run (the Vulkan counterpart of a CUDA graph), with its descriptor
// sets kept alongside it.
#include <chrono>
#include <cstring>

#include "backends/registry.h"
#include "backends/vulkan/context.h"
#include "espresso/errors.h"

namespace espresso::vulkan {
namespace {

constexpr std::uint32_t kSetsPerPool = 512;
constexpr std::uint32_t kBuffersPerSet = 6;
// The timestamp queries of mark_start/mark_end and those of time_ms.
constexpr std::uint32_t kMarkQueries = 0, kTimingQueries = 2;

double host_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

StreamContext::StreamContext(Device device, std::shared_ptr<const DeviceWeights> shared_weights)
    : device_(device),
      context_((vulkan::require_device(device), device_context(device.index))),
      shared_weights_(std::move(shared_weights)) {
  if (shared_weights_ && shared_weights_->device() != device) {
    throw DeviceError("weights resident on " + shared_weights_->device().str() + " cannot serve a net on " +
                      device.str());
  }
  const Api& vk = api();
  VkCommandPoolCreateInfo pool{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pool.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pool.queueFamilyIndex = context_.physical().queue_family;
  check(vk.vkCreateCommandPool(context_.device(), &pool, nullptr, &pool_), "vkCreateCommandPool");
  VkFenceCreateInfo fence{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  check(vk.vkCreateFence(context_.device(), &fence, nullptr, &fence_), "vkCreateFence");
  if (context_.physical().timestamp_valid_bits != 0) {
    VkQueryPoolCreateInfo query{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    query.queryType = VK_QUERY_TYPE_TIMESTAMP;
    query.queryCount = 4;  // kMarkQueries, kTimingQueries
    check(vk.vkCreateQueryPool(context_.device(), &query, nullptr, &timestamps_), "vkCreateQueryPool");
  }
}

StreamContext::~StreamContext() {
  // Errors cannot be reported from a destructor: wait for what was submitted, then free everything.
  try {
    synchronize();
  } catch (...) {
  }
  const Api& vk = api();
  const VkDevice device = context_.device();
  destroy_descriptors(transient_);
  destroy_descriptors(capture_descriptors_);
  if (timestamps_ != VK_NULL_HANDLE) vk.vkDestroyQueryPool(device, timestamps_, nullptr);
  vk.vkDestroyFence(device, fence_, nullptr);
  vk.vkDestroyCommandPool(device, pool_, nullptr);  // frees its command buffers
  context_.save_pipeline_cache();
}

VkCommandBuffer StreamContext::recording() {
  if (capturing_) return captured_;
  if (current_ != VK_NULL_HANDLE) return current_;
  const Api& vk = api();
  if (free_buffers_.empty()) {
    VkCommandBufferAllocateInfo allocate{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    allocate.commandPool = pool_;
    allocate.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    allocate.commandBufferCount = 1;
    VkCommandBuffer fresh = VK_NULL_HANDLE;
    check(vk.vkAllocateCommandBuffers(context_.device(), &allocate, &fresh), "vkAllocateCommandBuffers");
    free_buffers_.push_back(fresh);
  }
  current_ = free_buffers_.back();
  free_buffers_.pop_back();
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  check(vk.vkBeginCommandBuffer(current_, &begin), "vkBeginCommandBuffer");
  return current_;
}

void StreamContext::end_current() {
  if (current_ == VK_NULL_HANDLE) return;
  check(api().vkEndCommandBuffer(current_), "vkEndCommandBuffer");
  pending_.push_back(current_);
  current_ = VK_NULL_HANDLE;
}

void StreamContext::synchronize() {
  end_current();
  if (pending_.empty()) return;
  const Api& vk = api();
  std::vector<VkCommandBuffer> submitted;
  submitted.swap(pending_);
  context_.submit(submitted, fence_);
  const VkResult waited = vk.vkWaitForFences(context_.device(), 1, &fence_, VK_TRUE, UINT64_MAX);
  vk.vkResetFences(context_.device(), 1, &fence_);
  for (VkCommandBuffer buffer : submitted) {
    if (buffer == captured_) continue;
    vk.vkResetCommandBuffer(buffer, 0);
    free_buffers_.push_back(buffer);
  }
  reset_descriptors(transient_);
  if (waited == VK_ERROR_DEVICE_LOST) throw DeviceError("the Vulkan device was lost (VK_ERROR_DEVICE_LOST)");
  check(waited, "vkWaitForFences");
  host_end_ms_ = host_ms();
  if (marked_ && end_marked_) {
    marked_ = false;
    end_marked_ = false;
    elapsed_ms_ = timestamps_ms(kMarkQueries).value_or(host_end_ms_ - host_start_ms_);
  }
}

std::optional<double> StreamContext::timestamps_ms(std::uint32_t first) {
  if (timestamps_ == VK_NULL_HANDLE) return std::nullopt;
  std::uint64_t ticks[2] = {};
  if (api().vkGetQueryPoolResults(context_.device(), timestamps_, first, 2, sizeof(ticks), ticks,
                                  sizeof(std::uint64_t),
                                  VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) != VK_SUCCESS)
    return std::nullopt;
  return static_cast<double>(ticks[1] - ticks[0]) *
         static_cast<double>(context_.physical().properties.limits.timestampPeriod) * 1e-6;
}

double StreamContext::time_ms(const std::function<void()>& record) {
  if (capturing_) throw UnsupportedError("timing work while a capture is being recorded on " + device_.str());
  synchronize();
  const Api& vk = api();
  if (timestamps_ != VK_NULL_HANDLE) {
    VkCommandBuffer cb = recording();
    vk.vkCmdResetQueryPool(cb, timestamps_, kTimingQueries, 2);
    vk.vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, timestamps_, kTimingQueries);
  }
  const double start = host_ms();
  record();
  if (timestamps_ != VK_NULL_HANDLE) {
    VkCommandBuffer cb = recording();
    barrier(cb);
    vk.vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, timestamps_, kTimingQueries + 1);
  }
  synchronize();
  const double host = host_ms() - start;
  return timestamps_ms(kTimingQueries).value_or(host);
}

void StreamContext::begin_capture() {
  if (capturing_) throw UnsupportedError("a capture is already being recorded on " + device_.str());
  drop_capture();
  // Work queued before the capture stays before it.
  end_current();
  VkCommandBufferAllocateInfo allocate{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  allocate.commandPool = pool_;
  allocate.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  allocate.commandBufferCount = 1;
  check(api().vkAllocateCommandBuffers(context_.device(), &allocate, &captured_), "vkAllocateCommandBuffers");
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  begin.flags = VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT;
  check(api().vkBeginCommandBuffer(captured_, &begin), "vkBeginCommandBuffer");
  capturing_ = true;
}

void StreamContext::end_capture() {
  if (!capturing_) throw UnsupportedError("no capture is being recorded on " + device_.str());
  capturing_ = false;
  check(api().vkEndCommandBuffer(captured_), "vkEndCommandBuffer");
}

void StreamContext::abort_capture() {
  if (!capturing_) return;
  capturing_ = false;
  api().vkEndCommandBuffer(captured_);
  drop_capture();
}

void StreamContext::drop_capture() {
  if (captured_ == VK_NULL_HANDLE) return;
  synchronize();
  api().vkFreeCommandBuffers(context_.device(), pool_, 1, &captured_);
  captured_ = VK_NULL_HANDLE;
  destroy_descriptors(capture_descriptors_);
  retired_workspaces_.clear();
}

void StreamContext::replay() {
  if (captured_ == VK_NULL_HANDLE || capturing_) throw UnsupportedError("nothing captured to replay on " + device_.str());
  end_current();
  pending_.push_back(captured_);
}

void StreamContext::mark_start() {
  marked_ = true;
  end_marked_ = false;
  host_start_ms_ = host_ms();
  if (timestamps_ == VK_NULL_HANDLE) return;
  VkCommandBuffer cb = recording();
  api().vkCmdResetQueryPool(cb, timestamps_, kMarkQueries, 2);
  api().vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, timestamps_, kMarkQueries);
}

void StreamContext::mark_end() {
  end_marked_ = true;
  if (timestamps_ == VK_NULL_HANDLE) return;
  VkCommandBuffer cb = recording();
  barrier(cb);
  api().vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, timestamps_, kMarkQueries + 1);
}

double StreamContext::elapsed_ms() { return elapsed_ms_; }

void StreamContext::barrier(VkCommandBuffer cb) {
  VkMemoryBarrier b{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  b.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  b.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                    VK_ACCESS_TRANSFER_WRITE_BIT;
  const VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  api().vkCmdPipelineBarrier(cb, stages, stages, 0, 1, &b, 0, nullptr, 0, nullptr);
}

VkDescriptorSet StreamContext::allocate_set(Descriptors& d, VkDescriptorSetLayout layout) {
  const Api& vk = api();
  while (true) {
    if (d.current == d.pools.size()) {
      const VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kSetsPerPool * kBuffersPerSet};
      VkDescriptorPoolCreateInfo info{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
      info.maxSets = kSetsPerPool;
      info.poolSizeCount = 1;
      info.pPoolSizes = &size;
      VkDescriptorPool pool = VK_NULL_HANDLE;
      check(vk.vkCreateDescriptorPool(context_.device(), &info, nullptr, &pool), "vkCreateDescriptorPool");
      d.pools.push_back(pool);
    }
    VkDescriptorSetAllocateInfo info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    info.descriptorPool = d.pools[d.current];
    info.descriptorSetCount = 1;
    info.pSetLayouts = &layout;
    VkDescriptorSet set = VK_NULL_HANDLE;
    const VkResult result = vk.vkAllocateDescriptorSets(context_.device(), &info, &set);
    if (result == VK_SUCCESS) return set;
    if (result != VK_ERROR_OUT_OF_POOL_MEMORY && result != VK_ERROR_FRAGMENTED_POOL) {
      check(result, "vkAllocateDescriptorSets");
    }
    ++d.current;
  }
}

void StreamContext::reset_descriptors(Descriptors& d) {
  for (std::size_t i = 0; i < d.pools.size() && i <= d.current; ++i)
    api().vkResetDescriptorPool(context_.device(), d.pools[i], 0);
  d.current = 0;
}

void StreamContext::destroy_descriptors(Descriptors& d) {
  for (VkDescriptorPool pool : d.pools) api().vkDestroyDescriptorPool(context_.device(), pool, nullptr);
  d.pools.clear();
  d.current = 0;
}

void StreamContext::dispatch(std::string_view shader, const std::vector<Buffer>& buffers, const void* params,
                             std::size_t params_bytes, std::uint32_t groups_x, std::uint32_t groups_y,
                             std::uint32_t groups_z) {
  if (groups_x == 0 || groups_y == 0 || groups_z == 0) return;
  const auto bindings = static_cast<std::uint32_t>(buffers.size());
  if (bindings > kBuffersPerSet) throw DeviceError("too many buffers for one Vulkan dispatch");
  const std::size_t push_bytes = bindings * sizeof(std::uint32_t) + params_bytes;
  if (push_bytes > kPushConstantBytes) throw DeviceError("push constants of shader " + std::string(shader) + " too large");
  const Pipeline& p = context_.pipeline(shader, bindings);
  const VkPhysicalDeviceLimits& limits = context_.physical().properties.limits;
  const VkDeviceSize align = limits.minStorageBufferOffsetAlignment;
  const VkDeviceSize max_range = limits.maxStorageBufferRange;

  std::uint8_t push[kPushConstantBytes] = {};
  VkDescriptorBufferInfo infos[kBuffersPerSet];
  VkWriteDescriptorSet writes[kBuffersPerSet];
  VkDescriptorSet set = allocate_set(capturing_ ? capture_descriptors_ : transient_, p.set_layout);
  for (std::uint32_t i = 0; i < bindings; ++i) {
    const Resolved r = context_.resolve(buffers[i].address);
    // Bound from an aligned offset at or before the range; the shader adds the rest, in elements.
    const VkDeviceSize base = r.offset / align * align;
    const VkDeviceSize range = std::min(r.block_size - base, max_range / 4 * 4);
    if (r.offset + buffers[i].bytes > base + range) {
      throw DeviceError("a tensor of " + std::to_string(buffers[i].bytes) + " bytes exceeds this device's largest "
                        "storage buffer (" + std::to_string(max_range) + " bytes)");
    }
    const auto element = static_cast<std::uint32_t>((r.offset - base) / buffers[i].element_bytes);
    std::memcpy(push + i * sizeof(std::uint32_t), &element, sizeof(element));
    infos[i] = {r.buffer, base, range};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstSet = set;
    writes[i].dstBinding = i;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
  }
  if (params_bytes) std::memcpy(push + bindings * sizeof(std::uint32_t), params, params_bytes);
  const Api& vk = api();
  vk.vkUpdateDescriptorSets(context_.device(), bindings, writes, 0, nullptr);
  VkCommandBuffer cb = recording();
  barrier(cb);
  vk.vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipeline);
  vk.vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, 1, &set, 0, nullptr);
  vk.vkCmdPushConstants(cb, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushConstantBytes, push);
  const std::uint32_t most = limits.maxComputeWorkGroupCount[0];
  vk.vkCmdDispatch(cb, std::min(groups_x, most), groups_y, groups_z);
}

void StreamContext::copy(const void* source, void* destination, std::size_t bytes) {
  if (bytes == 0 || source == destination) return;
  const Resolved from = context_.resolve(source), to = context_.resolve(destination);
  VkCommandBuffer cb = recording();
  barrier(cb);
  const VkBufferCopy region{from.offset, to.offset, bytes};
  api().vkCmdCopyBuffer(cb, from.buffer, to.buffer, 1, &region);
}

const Tensor& StreamContext::device_weights(const Tensor& host, const std::string& owner) {
  if (!host.device().is_cpu()) {
    if (host.device() != device_)
      throw DeviceError("the weights of " + owner + " are on " + host.device().str() + ", not " + device_.str());
    return host;
  }
  if (shared_weights_) {
    if (const Tensor* shared = shared_weights_->find(host)) return *shared;
  }
  auto it = weights_.find(host.raw());
  if (it != weights_.end()) return it->second.device;
  auto memory = context_.allocate(host.bytes(), "the weights of " + owner);
  Tensor copy = Tensor::wrap(memory.get(), host.shape(), host.dtype(), device_, memory);
  copy.copy_from(host);
  WeightCopy& entry = weights_[host.raw()];
  entry = {host, std::move(copy)};
  return entry.device;
}

Tensor StreamContext::scratch(const Shape& shape, const std::string& owner) {
  auto memory = context_.allocate(static_cast<std::size_t>(shape.numel()) * sizeof(float), owner);
  return Tensor::wrap(memory.get(), shape, DType::f32, device_, memory);
}

void StreamContext::reserve_workspace(std::size_t bytes) {
  if (bytes <= workspace_bytes_) return;
  // The larger buffer first: where it cannot be had, the kernels made so far keep the one they use.
  std::shared_ptr<void> larger = context_.allocate(bytes, "the workspace of a " + device_.str() + " stream");
  if (capturing_ || captured_ != VK_NULL_HANDLE) {
    // The capture, replayed later, holds the old buffer's address: it lives until the capture goes.
    if (workspace_) retired_workspaces_.push_back(std::move(workspace_));
  } else if (workspace_) {
    synchronize();  // recorded work may still use it
  }
  workspace_ = std::move(larger);
  workspace_bytes_ = bytes;
}

void StreamContext::fill(Tensor& tensor, float value) {
  if (tensor.dtype() != DType::f32 && (tensor.dtype() != DType::f16 || !context_.physical().fp16_storage)) {
    throw UnsupportedError(std::string("Vulkan fill of a ") + dtype_name(tensor.dtype()) + " tensor on " +
                           device_.str());
  }
  struct {
    std::uint32_t n;
    float value;
  } params{static_cast<std::uint32_t>(tensor.numel()), value};
  dispatch(tensor.dtype() == DType::f16 ? "fill_f16" : "fill", {buffer(tensor)}, params,
           static_cast<std::uint32_t>((tensor.numel() + 255) / 256));
}

void StreamContext::convert(const Tensor& source, Tensor& destination) {
  if (source.numel() != destination.numel()) {
    throw ShapeError("Vulkan convert: " + source.shape().str() + " into " + destination.shape().str());
  }
  const DType from = source.dtype(), to = destination.dtype();
  if (from == to) {
    copy(source.raw(), destination.raw(), source.bytes());
    return;
  }
  if (!((from == DType::f32 && to == DType::f16) || (from == DType::f16 && to == DType::f32))) {
    throw UnsupportedError(std::string("Vulkan convert from ") + dtype_name(from) + " to " + dtype_name(to) +
                           ": only fp32 and fp16");
  }
  if (!context_.physical().fp16_storage) {
    throw UnsupportedError(device_.str() + " has no 16-bit storage buffers: no fp16 tensors there");
  }
  if (source.numel() == 0) return;
  struct {
    std::uint32_t n;
  } params{static_cast<std::uint32_t>(source.numel())};
  dispatch(to == DType::f16 ? "to_f16" : "to_f32", {buffer(source), buffer(destination)}, params,
           static_cast<std::uint32_t>((source.numel() + 255) / 256));
}

// Training runs on the CPU backend's solver arithmetic: the blobs go to the host and back.
void StreamContext::apply_update(const train::UpdateRule& rule, Tensor& value, Tensor& grad, Tensor& history,
                                 Tensor* second) {
  synchronize();
  Tensor v = value.to(Device::cpu()), g = grad.to(Device::cpu()), h = history.to(Device::cpu());
  Tensor s = second ? second->to(Device::cpu()) : Tensor{};
  auto host = backend_for(Device::cpu()).create_stream(Device::cpu(), nullptr);
  host->apply_update(rule, v, g, h, second ? &s : nullptr);
  value.copy_from(v);
  grad.copy_from(g);
  history.copy_from(h);
  if (second) second->copy_from(s);
}

double StreamContext::sum_of_squares(const Tensor& tensor) {
  synchronize();
  double sum = 0;
  for (float x : tensor.to(Device::cpu()).to_vector()) sum += static_cast<double>(x) * x;
  return sum;
}

}  // namespace espresso::vulkan
