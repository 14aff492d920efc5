#include "core/device_memory.h"

#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "espresso/errors.h"
#include "espresso/limits.h"

namespace espresso {
namespace {

constexpr std::size_t kDeviceTypes = static_cast<std::size_t>(DeviceType::vulkan) + 1;

constexpr std::size_t kHostAlignment = 64;

class HostMemory final : public DeviceMemory {
 public:
  std::shared_ptr<void> allocate(std::size_t bytes, Device, const std::string& purpose) override {
    const std::size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    void* data = std::aligned_alloc(kHostAlignment, rounded == 0 ? kHostAlignment : rounded);
    if (data == nullptr) {
      throw DeviceError("out of host memory allocating " + std::to_string(bytes) + " bytes" +
                        (purpose.empty() ? "" : " for " + purpose));
    }
    return {data, std::free};
  }
  void copy(void* destination, Device, const void* source, Device, std::size_t bytes) override {
    if (bytes != 0 && destination != source) std::memmove(destination, source, bytes);
  }
  void fill_zero(void* destination, Device, std::size_t bytes) override {
    if (bytes != 0) std::memset(destination, 0, bytes);
  }
};

std::array<std::atomic<DeviceMemory*>, kDeviceTypes>& table() {
  static std::array<std::atomic<DeviceMemory*>, kDeviceTypes> memories{&host_memory()};
  return memories;
}

}  // namespace

DeviceMemory& host_memory() {
  static HostMemory memory;
  return memory;
}

void register_device_memory(DeviceType type, DeviceMemory* memory) {
  table()[static_cast<std::size_t>(type)].store(memory);
}

DeviceMemory& device_memory(DeviceType type) {
  DeviceMemory* memory = table()[static_cast<std::size_t>(type)].load();
  if (memory == nullptr) {
    throw DeviceError("no backend is registered for " + Device{type, 0}.str() +
                      " memory yet: backends register on first use of the device API (list_devices(), "
                      "device_available(), a Model, Net or ModelPool)");
  }
  return *memory;
}

std::vector<Tensor> packed_zeros(const std::vector<Shape>& shapes, DType dtype, Device device,
                                 const std::string& purpose) {
  constexpr std::size_t kAlignment = 256;
  std::vector<std::size_t> offsets;
  std::size_t total = 0;
  for (const Shape& shape : shapes) {
    offsets.push_back(total);
    const auto bytes = static_cast<std::size_t>(
                           checked_numel(shape.dims(), dtype_size(dtype), "tensor of shape " + shape.str())) *
                       dtype_size(dtype);
    total += (bytes + kAlignment - 1) / kAlignment * kAlignment;
  }
  std::vector<Tensor> tensors;
  if (shapes.empty()) return tensors;
  DeviceMemory& memory = device_memory(device.type);
  std::shared_ptr<void> block = memory.allocate(total, device, purpose);
  memory.fill_zero(block.get(), device, total);
  for (std::size_t i = 0; i < shapes.size(); ++i)
    tensors.push_back(
        Tensor::wrap(static_cast<std::byte*>(block.get()) + offsets[i], shapes[i], dtype, device, block));
  return tensors;
}

}  // namespace espresso
