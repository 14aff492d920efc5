// The devices this build can run on: the CPU, and each GPU of every backend built in.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "espresso/tensor.h"

namespace espresso {

struct DeviceInfo {
  Device device;
  std::string name;
  std::size_t total_memory = 0;  // bytes, where known
  std::size_t free_memory = 0;   // bytes, where known
  int compute_major = 0;         // the GPU's architecture version, where it has one
  int compute_minor = 0;
  int multiprocessors = 0;       // or hardware threads
  int driver_version = 0;        // the vendor's encoding (CUDA: 13000 is 13.0)
  int runtime_version = 0;
  std::string pci_bus_id;        // "0000:3b:00.0", which NVML uses to find the same GPU
  std::string driver;            // Vulkan: the driver's name and version ("NVIDIA 580.95.5", "llvmpipe ...")
  std::string features;          // Vulkan: "fp16 storage+arithmetic, subgroup 32 (arithmetic)"
};

// Every usable device, the CPU first.
std::vector<DeviceInfo> list_devices();
// Whether `device` exists and can be used (its backend is built and the hardware is there).
bool device_available(Device device);
// What espresso's allocator holds on a device (zeros where the backend keeps no count, as on the CPU).
struct DeviceMemoryUse {
  std::size_t in_use_bytes = 0;  // tensors, workspaces, weights: everything allocated and not yet freed
  std::size_t peak_bytes = 0;    // the most in use at once since start or reset_peak_device_memory()
  std::size_t cached_bytes = 0;  // freed, kept by the allocator for reuse
  // What was in use at the peak, by purpose ("the activation arena of net 'x'", "the cuDNN workspace of
  // a cuda:0 stream", ...), largest first.
  std::vector<std::pair<std::string, std::size_t>> peak_by_purpose;
};
// Throws DeviceError when the device's backend is not built.
DeviceMemoryUse device_memory_use(Device device);
// Starts the peak again from what is in use now.
void reset_peak_device_memory(Device device);
// The names of the backends this build has: "cpu", "cuda", "vulkan".
std::vector<std::string> backend_names();

}  // namespace espresso
