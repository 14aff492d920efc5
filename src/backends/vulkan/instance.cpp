// The loader, the instance and the physical devices, found once per process.
#include <dlfcn.h>

#include <cstring>

#include "backends/vulkan/api.h"
#include "espresso/errors.h"

namespace espresso::vulkan {
namespace {

Api& mutable_api() {
  static Api functions;
  return functions;
}

std::string version_text(std::uint32_t v) {
  return std::to_string(VK_API_VERSION_MAJOR(v)) + "." + std::to_string(VK_API_VERSION_MINOR(v)) + "." +
         std::to_string(VK_API_VERSION_PATCH(v));
}

// NVIDIA packs its driver version 10.8.8.6 bits; others use Vulkan's own packing.
std::string driver_version_text(const VkPhysicalDeviceProperties& p) {
  const std::uint32_t v = p.driverVersion;
  if (p.vendorID == 0x10DE) {
    return std::to_string(v >> 22) + "." + std::to_string((v >> 14) & 0xff) + "." + std::to_string((v >> 6) & 0xff);
  }
  return version_text(v);
}

PhysicalDevice describe(const Api& vk, VkPhysicalDevice handle) {
  PhysicalDevice d;
  d.handle = handle;
  vk.vkGetPhysicalDeviceProperties(handle, &d.properties);
  vk.vkGetPhysicalDeviceMemoryProperties(handle, &d.memory);
  for (std::uint32_t i = 0; i < d.memory.memoryHeapCount; ++i) {
    if (d.memory.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
      d.device_local_bytes += d.memory.memoryHeaps[i].size;
  }
  const bool v12 = d.properties.apiVersion >= VK_API_VERSION_1_2;

  VkPhysicalDeviceSubgroupProperties subgroup{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceDriverProperties driver{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
  VkPhysicalDeviceProperties2 properties2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  properties2.pNext = &subgroup;
  if (v12) subgroup.pNext = &driver;
  vk.vkGetPhysicalDeviceProperties2(handle, &properties2);
  d.subgroup_size = subgroup.subgroupSize;
  d.subgroup_arithmetic = (subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                          (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
  d.driver = v12 ? std::string(driver.driverName) + " " + driver.driverInfo
                 : "driver " + driver_version_text(d.properties);
  if (v12 && std::strlen(driver.driverInfo) == 0) d.driver += driver_version_text(d.properties);

  VkPhysicalDevice16BitStorageFeatures storage16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceShaderFloat16Int8Features float16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
  VkPhysicalDeviceFeatures2 features2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  features2.pNext = &storage16;
  if (v12) storage16.pNext = &float16;
  vk.vkGetPhysicalDeviceFeatures2(handle, &features2);
  d.fp16_storage = storage16.storageBuffer16BitAccess == VK_TRUE;
  d.fp16_arithmetic = v12 && float16.shaderFloat16 == VK_TRUE;

  std::uint32_t families = 0;
  vk.vkGetPhysicalDeviceQueueFamilyProperties(handle, &families, nullptr);
  std::vector<VkQueueFamilyProperties> family(families);
  vk.vkGetPhysicalDeviceQueueFamilyProperties(handle, &families, family.data());
  d.queue_family = families;
  // A compute queue; one with graphics too only when there is no compute-only one.
  for (int pass = 0; pass < 2 && d.queue_family == families; ++pass) {
    for (std::uint32_t i = 0; i < families; ++i) {
      const VkQueueFlags flags = family[i].queueFlags;
      if (!(flags & VK_QUEUE_COMPUTE_BIT)) continue;
      if (pass == 0 && (flags & VK_QUEUE_GRAPHICS_BIT)) continue;
      d.queue_family = i;
      d.timestamp_valid_bits = family[i].timestampValidBits;
      break;
    }
  }
  return d;
}

Instance create() {
  Instance result;
  void* library = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) library = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    result.error = "no Vulkan loader (libvulkan.so.1 not found; install libvulkan1 and a Vulkan driver, e.g. "
                   "mesa-vulkan-drivers)";
    return result;
  }
  Api& vk = mutable_api();
  vk.vkGetInstanceProcAddr = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(library, "vkGetInstanceProcAddr"));
  if (vk.vkGetInstanceProcAddr == nullptr) {
    result.error = "the Vulkan loader has no vkGetInstanceProcAddr";
    return result;
  }
  vk.vkCreateInstance =
      reinterpret_cast<PFN_vkCreateInstance>(vk.vkGetInstanceProcAddr(nullptr, "vkCreateInstance"));
  vk.vkEnumerateInstanceVersion = reinterpret_cast<PFN_vkEnumerateInstanceVersion>(
      vk.vkGetInstanceProcAddr(nullptr, "vkEnumerateInstanceVersion"));
  std::uint32_t loader_version = VK_API_VERSION_1_0;
  if (vk.vkEnumerateInstanceVersion != nullptr) vk.vkEnumerateInstanceVersion(&loader_version);
  if (loader_version < VK_API_VERSION_1_1) {
    result.error = "the Vulkan loader supports Vulkan " + version_text(loader_version) + "; espresso needs 1.1";
    return result;
  }
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "espresso";
  app.pEngineName = "espresso";
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo info{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  info.pApplicationInfo = &app;
  const VkResult created = vk.vkCreateInstance(&info, nullptr, &result.handle);
  if (created != VK_SUCCESS) {
    result.error = std::string("vkCreateInstance failed: ") + result_name(created) +
                   (created == VK_ERROR_INCOMPATIBLE_DRIVER ? " (no Vulkan driver installed)" : "");
    return result;
  }
#define ESPRESSO_VK_LOAD(name) \
  vk.name = reinterpret_cast<PFN_##name>(vk.vkGetInstanceProcAddr(result.handle, #name));
  ESPRESSO_VK_INSTANCE_FUNCTIONS(ESPRESSO_VK_LOAD)
#undef ESPRESSO_VK_LOAD
  std::uint32_t count = 0;
  vk.vkEnumeratePhysicalDevices(result.handle, &count, nullptr);
  std::vector<VkPhysicalDevice> handles(count);
  vk.vkEnumeratePhysicalDevices(result.handle, &count, handles.data());
  for (VkPhysicalDevice handle : handles) {
    PhysicalDevice d = describe(vk, handle);
    if (d.properties.apiVersion < VK_API_VERSION_1_1) continue;
    std::uint32_t families = 0;
    vk.vkGetPhysicalDeviceQueueFamilyProperties(handle, &families, nullptr);
    if (d.queue_family >= families) continue;
    result.devices.push_back(std::move(d));
  }
  if (result.devices.empty()) {
    result.error = "no Vulkan device found (the loader found " + std::to_string(count) +
                   " device(s), none with Vulkan 1.1 compute; install a driver, e.g. mesa-vulkan-drivers)";
  }
  return result;
}

}  // namespace

const Instance& instance() {
  static const Instance* created = new Instance(create());
  return *created;
}

const Api& api() { return mutable_api(); }

const char* result_name(VkResult result) {
  switch (result) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL";
    default: return "VkResult error";
  }
}

void check(VkResult result, const char* call) {
  if (result == VK_SUCCESS) return;
  throw DeviceError(std::string(call) + " failed: " + result_name(result) + " (" +
                    std::to_string(static_cast<int>(result)) + ")");
}

}  // namespace espresso::vulkan
