// Memory on devices other than the host. Each backend provides it for its device type; core keeps the
// table, so tensors allocate and copy without knowing any backend (backends/registry fills it).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "espresso/tensor.h"

namespace espresso {

class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // Memory on `device`; `purpose` (a layer, "activation arena") goes into the out-of-memory error.
  // Freed memory may be cached for reuse once the last owner drops it, so owners must not drop memory
  // that queued work still uses.
  virtual std::shared_ptr<void> allocate(std::size_t bytes, Device device, const std::string& purpose) = 0;
  // Copies between a device of this type and the host, or two devices of this type; returns once the
  // copy has completed.
  virtual void copy(void* destination, Device destination_device, const void* source, Device source_device,
                    std::size_t bytes) = 0;
  // Sets device memory to zero; returns once done.
  virtual void fill_zero(void* destination, Device device, std::size_t bytes) = 0;
};

// The host's memory: 64-byte aligned, always registered for DeviceType::cpu.
DeviceMemory& host_memory();
// Called once per device type by the backend registry; `memory` must outlive every tensor.
void register_device_memory(DeviceType type, DeviceMemory* memory);
// The memory of a device type; throws DeviceError when no backend for it is registered.
DeviceMemory& device_memory(DeviceType type);

// Zero-filled tensors of `shapes`, all in one allocation (each at a 256-byte boundary): a net's weights,
// their gradients, a solver's history, without the allocator's rounding of each small blob (ResNet-18's
// 62 would round up by 1 MiB apiece on a GPU). `purpose` as for DeviceMemory::allocate.
std::vector<Tensor> packed_zeros(const std::vector<Shape>& shapes, DType dtype, Device device,
                                 const std::string& purpose);

}  // namespace espresso
