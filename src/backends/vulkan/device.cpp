// Device selection, the logical device and its queue, and the device listing.
#include <cstdlib>
#include <deque>
#include <mutex>

#include "backends/vulkan/context.h"
#include "espresso/errors.h"

namespace espresso::vulkan {

int device_count() {
  const Instance& vk = instance();
  return vk.error.empty() ? static_cast<int>(vk.devices.size()) : 0;
}

void require_device(Device device) {
  if (device.type != DeviceType::vulkan) throw DeviceError("expected a Vulkan device, got " + device.str());
  const Instance& vk = instance();
  if (!vk.error.empty()) throw DeviceError("device " + device.str() + ": " + vk.error);
  const int count = static_cast<int>(vk.devices.size());
  if (device.index < 0 || device.index >= count) {
    throw DeviceError("device " + device.str() + " does not exist: " + std::to_string(count) +
                      " Vulkan device(s) found (vulkan:0 to vulkan:" + std::to_string(count - 1) + ")");
  }
}

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> devices;
  const Instance& vk = instance();
  if (!vk.error.empty()) return devices;
  for (std::size_t i = 0; i < vk.devices.size(); ++i) {
    const PhysicalDevice& d = vk.devices[i];
    DeviceInfo info;
    info.device = Device::vulkan(static_cast<int>(i));
    info.name = d.properties.deviceName;
    info.total_memory = d.device_local_bytes;
    info.compute_major = static_cast<int>(VK_API_VERSION_MAJOR(d.properties.apiVersion));
    info.compute_minor = static_cast<int>(VK_API_VERSION_MINOR(d.properties.apiVersion));
    info.driver_version = static_cast<int>(d.properties.driverVersion);
    info.driver = d.driver;
    std::string features = d.fp16_storage ? (d.fp16_arithmetic ? "fp16 storage+arithmetic" : "fp16 storage")
                                          : (d.fp16_arithmetic ? "fp16 arithmetic" : "no fp16");
    features += ", subgroup " + std::to_string(d.subgroup_size) +
                (d.subgroup_arithmetic ? " (arithmetic)" : " (no arithmetic)");
    features += d.timestamp_valid_bits ? ", timestamps" : ", no timestamps";
    info.features = features;
    devices.push_back(std::move(info));
  }
  return devices;
}

DeviceContext& device_context(int index) {
  static std::mutex mutex;
  static auto* contexts = new std::map<int, std::unique_ptr<DeviceContext>>;
  const std::lock_guard lock(mutex);
  auto& slot = (*contexts)[index];
  if (!slot) slot = std::make_unique<DeviceContext>(index);
  return *slot;
}

DeviceContext::DeviceContext(int index)
    : index_(index), physical_(&instance().devices.at(static_cast<std::size_t>(index))) {
  const Api& vk = api();
  const float priority = 1.0f;
  VkDeviceQueueCreateInfo queue{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  queue.queueFamilyIndex = physical_->queue_family;
  queue.queueCount = 1;
  queue.pQueuePriorities = &priority;
  VkDeviceCreateInfo info{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  info.queueCreateInfoCount = 1;
  info.pQueueCreateInfos = &queue;
  // fp16 activations (the shaders' _f16 variants) need 16-bit storage buffers.
  VkPhysicalDevice16BitStorageFeatures storage16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  storage16.storageBuffer16BitAccess = VK_TRUE;
  if (physical_->fp16_storage) info.pNext = &storage16;
  check(vk.vkCreateDevice(physical_->handle, &info, nullptr, &device_), "vkCreateDevice");
  vk.vkGetDeviceQueue(device_, physical_->queue_family, 0, &queue_);

  // Each device's blocks live in their own stretch of addresses (1 TiB per device), far from host memory.
  next_base_ = (std::uintptr_t{0x100} + static_cast<std::uintptr_t>(index) * 0x10) << 40;
  if (const char* limit = std::getenv("ESPRESSO_VULKAN_MEMORY_LIMIT")) {
    limit_bytes_ = static_cast<std::size_t>(std::strtoull(limit, nullptr, 10));
  }

  VkCommandPoolCreateInfo pool{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pool.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pool.queueFamilyIndex = physical_->queue_family;
  check(vk.vkCreateCommandPool(device_, &pool, nullptr, &transfer_pool_), "vkCreateCommandPool");
  VkCommandBufferAllocateInfo allocate{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  allocate.commandPool = transfer_pool_;
  allocate.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  allocate.commandBufferCount = 1;
  check(vk.vkAllocateCommandBuffers(device_, &allocate, &transfer_buffer_), "vkAllocateCommandBuffers");
  VkFenceCreateInfo fence{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  check(vk.vkCreateFence(device_, &fence, nullptr, &transfer_fence_), "vkCreateFence");
  init_staging();
  init_pipeline_cache();
}

void DeviceContext::submit(const std::vector<VkCommandBuffer>& buffers, VkFence fence) {
  VkSubmitInfo info{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  info.commandBufferCount = static_cast<std::uint32_t>(buffers.size());
  info.pCommandBuffers = buffers.data();
  const std::lock_guard lock(queue_mutex_);
  check(api().vkQueueSubmit(queue_, 1, &info, fence), "vkQueueSubmit");
}

}  // namespace espresso::vulkan
