// The devices this build can run on: the CPU, and each GPU of every backend built in.
#pragma once

#include <cstddef>
#include <string>
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
// The names of the backends this build has: "cpu", "cuda", "vulkan".
std::vector<std::string> backend_names();

}  // namespace espresso
