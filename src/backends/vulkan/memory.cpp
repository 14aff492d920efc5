// Device memory: large device-local blocks, each one VkBuffer, sub-allocated first-fit with coalescing
// free lists; tensors above a quarter block get a block of their own, kept for reuse when freed. Host
// transfers go through one host-visible staging buffer per device.
#include <algorithm>
#include <cstring>

#include "backends/vulkan/context.h"
#include "espresso/errors.h"

namespace espresso::vulkan {
namespace {

constexpr std::size_t kAlignment = 256;
constexpr std::size_t kBlockBytes = std::size_t{64} << 20;
constexpr std::size_t kDedicatedAbove = kBlockBytes / 4;
constexpr std::size_t kStagingBytes = std::size_t{16} << 20;

std::size_t round_up(std::size_t n, std::size_t step) { return (n + step - 1) / step * step; }

std::string describe_bytes(std::size_t bytes) {
  const double mib = static_cast<double>(bytes) / (1 << 20);
  return std::to_string(bytes) + " bytes (" + std::to_string(static_cast<long long>(mib + 0.5)) + " MiB)";
}

constexpr VkBufferUsageFlags kUsage =
    VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;

}  // namespace

std::uint32_t DeviceContext::memory_type(std::uint32_t allowed, VkMemoryPropertyFlags wanted,
                                         VkMemoryPropertyFlags fallback) const {
  const VkPhysicalDeviceMemoryProperties& memory = physical_->memory;
  for (VkMemoryPropertyFlags flags : {wanted, fallback}) {
    for (std::uint32_t i = 0; i < memory.memoryTypeCount; ++i) {
      if ((allowed & (1u << i)) && (memory.memoryTypes[i].propertyFlags & flags) == flags) return i;
    }
  }
  throw DeviceError("vulkan:" + std::to_string(index_) + " has no suitable memory type");
}

void DeviceContext::init_staging() {
  const Api& vk = api();
  VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  info.size = kStagingBytes;
  info.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check(vk.vkCreateBuffer(device_, &info, nullptr, &staging_), "vkCreateBuffer (staging)");
  VkMemoryRequirements requirements;
  vk.vkGetBufferMemoryRequirements(device_, staging_, &requirements);
  VkMemoryAllocateInfo allocate{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  allocate.allocationSize = requirements.size;
  allocate.memoryTypeIndex = memory_type(
      requirements.memoryTypeBits,
      VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT | VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
      VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
  check(vk.vkAllocateMemory(device_, &allocate, nullptr, &staging_memory_), "vkAllocateMemory (staging)");
  check(vk.vkBindBufferMemory(device_, staging_, staging_memory_, 0), "vkBindBufferMemory");
  check(vk.vkMapMemory(device_, staging_memory_, 0, VK_WHOLE_SIZE, 0, &staging_mapped_), "vkMapMemory");
}

DeviceContext::Block* DeviceContext::new_block(std::size_t size, bool dedicated, const std::string& purpose,
                                               std::size_t asked) {
  const Api& vk = api();
  auto out_of_memory = [&](const std::string& why) {
    return OutOfMemoryError("out of memory on vulkan:" + std::to_string(index_) + ": could not allocate " +
                            describe_bytes(asked) + (purpose.empty() ? "" : " for " + purpose) + " (" + why +
                            "); espresso holds " + describe_bytes(in_use_bytes_) + " in use");
  };
  if (limit_bytes_ != 0 && allocated_bytes_ + size > limit_bytes_) {
    if (!release_empty_blocks() || allocated_bytes_ + size > limit_bytes_) {
      throw out_of_memory("over the limit of " + describe_bytes(limit_bytes_));
    }
  }
  Block block;
  block.size = size;
  block.dedicated = dedicated;
  VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  info.size = size;
  info.usage = kUsage;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check(vk.vkCreateBuffer(device_, &info, nullptr, &block.buffer), "vkCreateBuffer");
  VkMemoryRequirements requirements;
  vk.vkGetBufferMemoryRequirements(device_, block.buffer, &requirements);
  VkMemoryAllocateInfo allocate{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  allocate.allocationSize = requirements.size;
  allocate.memoryTypeIndex =
      memory_type(requirements.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
  VkResult result = vk.vkAllocateMemory(device_, &allocate, nullptr, &block.memory);
  if (result == VK_ERROR_OUT_OF_DEVICE_MEMORY || result == VK_ERROR_OUT_OF_HOST_MEMORY) {
    // Cached empty blocks may hold what we need: give them back and retry once.
    if (release_empty_blocks()) result = vk.vkAllocateMemory(device_, &allocate, nullptr, &block.memory);
  }
  if (result != VK_SUCCESS) {
    vk.vkDestroyBuffer(device_, block.buffer, nullptr);
    if (result == VK_ERROR_OUT_OF_DEVICE_MEMORY || result == VK_ERROR_OUT_OF_HOST_MEMORY)
      throw out_of_memory(result_name(result));
    check(result, "vkAllocateMemory");
  }
  check(vk.vkBindBufferMemory(device_, block.buffer, block.memory, 0), "vkBindBufferMemory");
  block.base = next_base_;
  next_base_ += round_up(size, std::size_t{1} << 20) + (std::size_t{1} << 20);
  block.free.emplace(0, size);
  allocated_bytes_ += size;
  auto [it, inserted] = blocks_.emplace(block.base, std::move(block));
  return &it->second;
}

bool DeviceContext::release_empty_blocks() {
  std::vector<std::uintptr_t> empty;
  for (const auto& [base, block] : blocks_) {
    if (block.used == 0) empty.push_back(base);
  }
  for (std::uintptr_t base : empty) destroy_block(base);
  return !empty.empty();
}

void DeviceContext::destroy_block(std::uintptr_t base) {
  auto it = blocks_.find(base);
  const Api& vk = api();
  vk.vkDestroyBuffer(device_, it->second.buffer, nullptr);
  vk.vkFreeMemory(device_, it->second.memory, nullptr);
  allocated_bytes_ -= it->second.size;
  blocks_.erase(it);
}

std::shared_ptr<void> DeviceContext::allocate(std::size_t bytes, const std::string& purpose) {
  const std::size_t size = round_up(std::max<std::size_t>(bytes, 1), kAlignment);
  const std::size_t max_range = physical_->properties.limits.maxStorageBufferRange;
  const std::lock_guard lock(memory_mutex_);
  Block* chosen = nullptr;
  std::size_t offset = 0;
  if (size > kDedicatedAbove) {
    // A block of its own, or a cached empty one of the same size.
    const std::size_t block_size = round_up(size, std::size_t{1} << 20);
    for (auto& [base, block] : blocks_) {
      if (block.dedicated && block.used == 0 && block.size == block_size) {
        chosen = &block;
        break;
      }
    }
    if (chosen == nullptr) chosen = new_block(block_size, true, purpose, bytes);
  } else {
    for (auto& [base, block] : blocks_) {
      if (block.dedicated) continue;
      for (const auto& [at, length] : block.free) {
        if (length >= size) {
          chosen = &block;
          offset = at;
          break;
        }
      }
      if (chosen != nullptr) break;
    }
    if (chosen == nullptr) chosen = new_block(std::min(kBlockBytes, std::max(max_range, kDedicatedAbove)), false,
                                              purpose, bytes);
  }
  auto hole = chosen->free.find(offset);
  const std::size_t hole_size = hole->second;
  chosen->free.erase(hole);
  if (hole_size > size) chosen->free.emplace(offset + size, hole_size - size);
  chosen->used += size;
  in_use_bytes_ += size;
  const std::uintptr_t address = chosen->base + offset;
  return {reinterpret_cast<void*>(address), [this, size](void* p) { release(reinterpret_cast<std::uintptr_t>(p), size); }};
}

void DeviceContext::release(std::uintptr_t address, std::size_t size) {
  const std::lock_guard lock(memory_mutex_);
  auto it = std::prev(blocks_.upper_bound(address));
  Block& block = it->second;
  std::size_t offset = address - block.base;
  std::size_t length = size;
  auto next = block.free.lower_bound(offset);
  if (next != block.free.end() && next->first == offset + length) {
    length += next->second;
    next = block.free.erase(next);
  }
  if (next != block.free.begin()) {
    auto previous = std::prev(next);
    if (previous->first + previous->second == offset) {
      offset = previous->first;
      length += previous->second;
      block.free.erase(previous);
    }
  }
  block.free.emplace(offset, length);
  block.used -= size;
  in_use_bytes_ -= size;
}

Resolved DeviceContext::resolve(const void* address) const {
  const auto p = reinterpret_cast<std::uintptr_t>(address);
  const std::lock_guard lock(memory_mutex_);
  auto it = blocks_.upper_bound(p);
  if (it == blocks_.begin() || p >= std::prev(it)->first + std::prev(it)->second.size) {
    throw DeviceError("address " + std::to_string(p) + " is not Vulkan memory of vulkan:" + std::to_string(index_));
  }
  --it;
  return {it->second.buffer, p - it->first, it->second.size};
}

MemoryStats DeviceContext::stats() const {
  const std::lock_guard lock(memory_mutex_);
  return {in_use_bytes_, allocated_bytes_ - in_use_bytes_};
}

std::shared_ptr<void> DeviceContext::shared_transform(const std::string& key,
                                                      const std::function<std::shared_ptr<void>()>& make) {
  const std::lock_guard lock(transform_mutex_);
  std::erase_if(transforms_, [](const auto& entry) { return entry.second.expired(); });
  if (auto it = transforms_.find(key); it != transforms_.end()) return it->second.lock();
  std::shared_ptr<void> made = make();
  transforms_[key] = made;
  return made;
}

void DeviceContext::set_memory_limit(std::size_t bytes) {
  {
    // Blocks about to go back may still be read by submitted work.
    const std::lock_guard queue_lock(queue_mutex_);
    check(api().vkQueueWaitIdle(queue_), "vkQueueWaitIdle");
  }
  const std::lock_guard lock(memory_mutex_);
  limit_bytes_ = bytes;
  // The cap holds from now on: cached empty blocks beyond it go back, so that they cannot serve a request
  // the cap would refuse.
  if (bytes != 0 && allocated_bytes_ > bytes) release_empty_blocks();
}

template <typename Record>
void DeviceContext::run_transfer(Record record) {
  const Api& vk = api();
  check(vk.vkResetCommandBuffer(transfer_buffer_, 0), "vkResetCommandBuffer");
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  check(vk.vkBeginCommandBuffer(transfer_buffer_, &begin), "vkBeginCommandBuffer");
  // Everything before on the queue (kernels, other transfers) is done and visible first.
  VkMemoryBarrier before{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  before.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_HOST_WRITE_BIT;
  before.dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  vk.vkCmdPipelineBarrier(transfer_buffer_, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT | VK_PIPELINE_STAGE_HOST_BIT,
                          VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &before, 0, nullptr, 0, nullptr);
  record(transfer_buffer_);
  VkMemoryBarrier after{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  after.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
  after.dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
  vk.vkCmdPipelineBarrier(transfer_buffer_, VK_PIPELINE_STAGE_TRANSFER_BIT,
                          VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &after, 0,
                          nullptr, 0, nullptr);
  check(vk.vkEndCommandBuffer(transfer_buffer_), "vkEndCommandBuffer");
  submit({transfer_buffer_}, transfer_fence_);
  const VkResult waited = vk.vkWaitForFences(device_, 1, &transfer_fence_, VK_TRUE, UINT64_MAX);
  vk.vkResetFences(device_, 1, &transfer_fence_);
  check(waited, "vkWaitForFences (transfer)");
}

void DeviceContext::upload(void* destination, const void* source, std::size_t bytes) {
  const std::lock_guard lock(transfer_mutex_);
  for (std::size_t done = 0; done < bytes; done += kStagingBytes) {
    const std::size_t chunk = std::min(kStagingBytes, bytes - done);
    std::memcpy(staging_mapped_, static_cast<const std::byte*>(source) + done, chunk);
    const Resolved to = resolve(static_cast<std::byte*>(destination) + done);
    run_transfer([&](VkCommandBuffer cb) {
      const VkBufferCopy region{0, to.offset, chunk};
      api().vkCmdCopyBuffer(cb, staging_, to.buffer, 1, &region);
    });
  }
}

void DeviceContext::download(void* destination, const void* source, std::size_t bytes) {
  const std::lock_guard lock(transfer_mutex_);
  for (std::size_t done = 0; done < bytes; done += kStagingBytes) {
    const std::size_t chunk = std::min(kStagingBytes, bytes - done);
    const Resolved from = resolve(static_cast<const std::byte*>(source) + done);
    run_transfer([&](VkCommandBuffer cb) {
      const VkBufferCopy region{from.offset, 0, chunk};
      api().vkCmdCopyBuffer(cb, from.buffer, staging_, 1, &region);
    });
    std::memcpy(static_cast<std::byte*>(destination) + done, staging_mapped_, chunk);
  }
}

void DeviceContext::copy_device(void* destination, const void* source, std::size_t bytes) {
  if (bytes == 0 || destination == source) return;
  const Resolved from = resolve(source), to = resolve(destination);
  const std::lock_guard lock(transfer_mutex_);
  run_transfer([&](VkCommandBuffer cb) {
    const VkBufferCopy region{from.offset, to.offset, bytes};
    api().vkCmdCopyBuffer(cb, from.buffer, to.buffer, 1, &region);
  });
}

void DeviceContext::fill_zero(void* destination, std::size_t bytes) {
  if (bytes == 0) return;
  const Resolved to = resolve(destination);
  const std::size_t aligned = to.offset % 4 == 0 ? bytes / 4 * 4 : 0;
  if (aligned != 0) {
    const std::lock_guard lock(transfer_mutex_);
    run_transfer([&](VkCommandBuffer cb) { api().vkCmdFillBuffer(cb, to.buffer, to.offset, aligned, 0); });
  }
  if (aligned < bytes) {
    const std::vector<std::byte> zeros(bytes - aligned);
    upload(static_cast<std::byte*>(destination) + aligned, zeros.data(), zeros.size());
  }
}

}  // namespace espresso::vulkan
