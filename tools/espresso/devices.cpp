// `espresso devices`: the CPU and every GPU this build can use.
#include <cstdio>
#include <thread>

#include "backends/cuda/device_info.h"
#include "common.h"

namespace espresso::cli {
namespace {

std::string cuda_version(int encoded) {
  return std::to_string(encoded / 1000) + "." + std::to_string(encoded % 1000 / 10);
}

int run_devices() {
  std::printf("cpu      %u hardware threads, %d worker threads\n", std::thread::hardware_concurrency(),
              num_threads());
  const std::vector<cuda::DeviceInfo> gpus = cuda::list_devices();
  if (gpus.empty()) std::printf("no CUDA device (or this build has no CUDA backend)\n");
  for (const cuda::DeviceInfo& d : gpus) {
    std::printf("cuda:%d   %s, %s memory (%s free), compute capability %d.%d, %d multiprocessors, driver %s, runtime %s\n",
                d.index, d.name.c_str(), binary_bytes(d.total_memory).c_str(), binary_bytes(d.free_memory).c_str(),
                d.compute_major, d.compute_minor, d.multiprocessors, cuda_version(d.driver_version).c_str(),
                cuda_version(d.runtime_version).c_str());
  }
  return 0;
}

}  // namespace

Verb add_devices_verb(CLI::App& app) {
  CLI::App* command = app.add_subcommand("devices", "List the CPU and the GPUs espresso can use");
  return {command, [] { return run_devices(); }};
}

}  // namespace espresso::cli
