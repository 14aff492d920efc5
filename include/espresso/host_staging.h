// Host memory for data on its way to a device, as `espresso serve` assembles its batches in.
#pragma once

#include <cstddef>
#include <memory>

#include "espresso/tensor.h"

namespace espresso {

// Host memory of `bytes` (64-byte aligned) from which copies to `device` run fastest: page-locked for
// CUDA, so that copying a tensor that lies in it (or in any part of it) to the GPU is one DMA with no
// bounce through staging chunks; plain host memory for the CPU and other devices. Freed when the last
// owner drops it. Throws DeviceError when the device's backend is not built or the device is missing.
std::shared_ptr<void> allocate_host_staging(std::size_t bytes, Device device);

}  // namespace espresso
