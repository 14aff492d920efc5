// The backends this build has, made once, CPU first. Asking for any backend registers every backend's
// device memory with core, so tensors can live on their devices from then on.
#pragma once

#include <vector>

#include "backends/backend.h"

namespace espresso {

// Every backend of this build.
const std::vector<Backend*>& backends();
// The backend for a device type; throws DeviceError naming the build option when it is not built.
Backend& backend_for(DeviceType type);
Backend& backend_for(Device device);
// Throws DeviceError unless `device` exists and is usable.
void require_device(Device device);

}  // namespace espresso
