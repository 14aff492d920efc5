// `espresso devices`: the CPU and every GPU this build can use.
#include <cstdio>

#include "common.h"
#include "espresso/devices.h"

namespace espresso::cli {
namespace {

std::string cuda_version(int encoded) {
  return std::to_string(encoded / 1000) + "." + std::to_string(encoded % 1000 / 10);
}

int run_devices() {
  const std::vector<DeviceInfo> devices = list_devices();
  bool any_gpu = false;
  for (const DeviceInfo& d : devices) {
    if (d.device.is_cpu()) {
      std::printf("cpu      %s, %d hardware threads, %d worker threads\n", d.name.c_str(), d.multiprocessors,
                  num_threads());
      continue;
    }
    any_gpu = true;
    if (d.device.type == DeviceType::vulkan) {
      std::printf("%-8s %s, %s device-local memory, Vulkan %d.%d, driver %s, %s\n", d.device.str().c_str(),
                  d.name.c_str(), binary_bytes(d.total_memory).c_str(), d.compute_major, d.compute_minor,
                  d.driver.c_str(), d.features.c_str());
      continue;
    }
    std::printf("%-8s %s, %s memory (%s free), compute capability %d.%d, %d multiprocessors, driver %s, runtime %s\n",
                d.device.str().c_str(), d.name.c_str(), binary_bytes(d.total_memory).c_str(),
                binary_bytes(d.free_memory).c_str(), d.compute_major, d.compute_minor, d.multiprocessors,
                cuda_version(d.driver_version).c_str(), cuda_version(d.runtime_version).c_str());
  }
  if (!any_gpu) std::printf("no GPU (no CUDA or Vulkan device, or this build has neither backend)\n");
  return 0;
}

}  // namespace

Verb add_devices_verb(CLI::App& app) {
  CLI::App* command = app.add_subcommand("devices", "List the CPU and the GPUs espresso can use");
  return {command, [] { return run_devices(); }};
}

}  // namespace espresso::cli
