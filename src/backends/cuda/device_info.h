// The GPUs this process can use, for `espresso devices` and error messages.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace espresso::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  std::size_t total_memory = 0;  // bytes
  std::size_t free_memory = 0;   // bytes, when listed
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
  int driver_version = 0;   // CUDA's encoding: 13000 is 13.0
  int runtime_version = 0;  // the CUDA runtime this build uses, same encoding
  std::string pci_bus_id;   // "0000:3b:00.0", which NVML uses to find the same GPU
};

// Every visible GPU; empty without a GPU, without a driver, or without CUDA in the build.
std::vector<DeviceInfo> list_devices();

}  // namespace espresso::cuda
