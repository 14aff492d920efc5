// The Vulkan API as the backend uses it: the loader (libvulkan.so.1) is opened at run time, so a build
// with the Vulkan backend runs everywhere and reports why Vulkan is unusable where it has no loader or
// driver. Every function the backend calls is one pointer of Api, resolved once.
#pragma once

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <cstdint>
#include <string>
#include <vector>

namespace espresso::vulkan {

#define ESPRESSO_VK_INSTANCE_FUNCTIONS(X)                                                              \
  X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties)                  \
  X(vkGetPhysicalDeviceProperties2) X(vkGetPhysicalDeviceFeatures2)                                    \
  X(vkGetPhysicalDeviceQueueFamilyProperties) X(vkGetPhysicalDeviceMemoryProperties) X(vkCreateDevice) \
  X(vkEnumerateDeviceExtensionProperties) X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkCreateBuffer)      \
  X(vkDestroyBuffer) X(vkGetBufferMemoryRequirements) X(vkAllocateMemory) X(vkFreeMemory)               \
  X(vkBindBufferMemory) X(vkMapMemory) X(vkUnmapMemory) X(vkCreateCommandPool) X(vkDestroyCommandPool)  \
  X(vkAllocateCommandBuffers) X(vkFreeCommandBuffers) X(vkBeginCommandBuffer) X(vkEndCommandBuffer)     \
  X(vkResetCommandBuffer) X(vkQueueSubmit) X(vkQueueWaitIdle) X(vkCreateFence) X(vkDestroyFence)        \
  X(vkWaitForFences) X(vkResetFences) X(vkCreateShaderModule) X(vkDestroyShaderModule)                  \
  X(vkCreateDescriptorSetLayout) X(vkDestroyDescriptorSetLayout) X(vkCreatePipelineLayout)              \
  X(vkDestroyPipelineLayout) X(vkCreateComputePipelines) X(vkDestroyPipeline)                           \
  X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool) X(vkResetDescriptorPool)                         \
  X(vkAllocateDescriptorSets) X(vkUpdateDescriptorSets) X(vkCmdBindPipeline)                            \
  X(vkCmdBindDescriptorSets) X(vkCmdPushConstants) X(vkCmdDispatch) X(vkCmdPipelineBarrier)             \
  X(vkCmdCopyBuffer) X(vkCmdFillBuffer) X(vkCreateQueryPool) X(vkDestroyQueryPool)                      \
  X(vkCmdResetQueryPool) X(vkCmdWriteTimestamp) X(vkGetQueryPoolResults) X(vkCreatePipelineCache)       \
  X(vkDestroyPipelineCache) X(vkGetPipelineCacheData)

struct Api {
  PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
  PFN_vkCreateInstance vkCreateInstance = nullptr;
  PFN_vkEnumerateInstanceVersion vkEnumerateInstanceVersion = nullptr;
#define ESPRESSO_VK_DECLARE(name) PFN_##name name = nullptr;
  ESPRESSO_VK_INSTANCE_FUNCTIONS(ESPRESSO_VK_DECLARE)
#undef ESPRESSO_VK_DECLARE
};

// What the backend knows of one usable physical device (one with a compute queue).
struct PhysicalDevice {
  VkPhysicalDevice handle = VK_NULL_HANDLE;
  VkPhysicalDeviceProperties properties{};
  VkPhysicalDeviceMemoryProperties memory{};
  std::uint32_t queue_family = 0;
  std::uint32_t timestamp_valid_bits = 0;
  bool fp16_storage = false;
  bool fp16_arithmetic = false;
  std::uint32_t subgroup_size = 0;
  bool subgroup_arithmetic = false;
  std::string driver;  // name and version
  std::size_t device_local_bytes = 0;
};

struct Instance {
  std::string error;  // why Vulkan cannot be used here; empty when it can
  VkInstance handle = VK_NULL_HANDLE;
  std::vector<PhysicalDevice> devices;
};

// Opens the loader and creates the instance once; never destroyed.
const Instance& instance();
// The loaded functions; valid once instance() has no error.
const Api& api();
// Throws DeviceError naming `call` unless `result` is VK_SUCCESS.
void check(VkResult result, const char* call);
const char* result_name(VkResult result);

}  // namespace espresso::vulkan
