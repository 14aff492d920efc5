// How a backend provides espresso::allocate_host_staging (espresso/host_staging.h) for its device type.
#pragma once

#include <cstddef>
#include <memory>

#include "espresso/tensor.h"

namespace espresso {

using HostStagingAllocator = std::shared_ptr<void> (*)(std::size_t bytes, Device device);
// Called by a backend as it is made; without one, a device type's host staging is plain host memory.
void register_host_staging(DeviceType type, HostStagingAllocator allocate);

}  // namespace espresso
