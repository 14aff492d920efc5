// The Vulkan backend behind the Backend interface: devices, memory and streams from context.h, kernels
// from the files of this folder (vulkan_kernels.inc is generated from their factories).
#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <string_view>

#include "backends/vulkan/kernels.h"
#include "espresso/errors.h"

namespace espresso {
namespace vulkan {
namespace {

using Entry = KernelEntry<std::unique_ptr<Kernel> (*)(const Layer& layer, const std::vector<Shape>& inputs,
                                                       StreamContext& context)>;

constexpr Entry kKernels[] = {
#define ESPRESSO_KERNEL(type, stem) {#type, make_##stem},
#include "vulkan_kernels.inc"
#undef ESPRESSO_KERNEL
};

// The layer types whose kernels run every configuration with fp16 activations (their shaders' _f16
// variants) where the device has 16-bit storage buffers; the others run in fp32 inside an fp16 net.
// Softmax stays in fp32, as on CUDA: probabilities from fp16 logits lose a digit.
constexpr std::string_view kHalfTypes[] = {
    "Convolution", "Pooling", "ReLU",    "Activation", "Binary", "Scale",   "Bias",         "BatchNorm",
    "Concat",      "Slice",   "Flatten", "Reshape",    "Split",  "Dropout", "InnerProduct", "Pad"};

bool runs_in_half(std::string_view type) {
  return std::find(std::begin(kHalfTypes), std::end(kHalfTypes), type) != std::end(kHalfTypes);
}

// While alive, the kernels made on `context` keep their activations in fp16.
class HalfKernels {
 public:
  explicit HalfKernels(StreamContext& context) : context_(context) { context_.set_kernel_dtype(DType::f16); }
  ~HalfKernels() { context_.set_kernel_dtype(DType::f32); }
  HalfKernels(const HalfKernels&) = delete;
  HalfKernels& operator=(const HalfKernels&) = delete;

 private:
  StreamContext& context_;
};

class VulkanBackend final : public Backend {
 public:
  const char* name() const override { return "vulkan"; }
  DeviceType type() const override { return DeviceType::vulkan; }
  int device_count() const override { return vulkan::device_count(); }
  void require_device(Device device) const override { vulkan::require_device(device); }
  std::vector<DeviceInfo> devices() const override { return list_devices(); }

  std::shared_ptr<void> allocate(std::size_t bytes, Device device, const std::string& purpose) override {
    vulkan::require_device(device);
    return device_context(device.index).allocate(bytes, purpose);
  }
  void copy(void* destination, Device destination_device, const void* source, Device source_device,
            std::size_t bytes) override {
    if (bytes == 0) return;
    if (source_device.is_cpu()) {
      device_context(destination_device.index).upload(destination, source, bytes);
    } else if (destination_device.is_cpu()) {
      device_context(source_device.index).download(destination, source, bytes);
    } else if (source_device == destination_device) {
      device_context(source_device.index).copy_device(destination, source, bytes);
    } else {
      std::vector<std::byte> host(bytes);
      device_context(source_device.index).download(host.data(), source, bytes);
      device_context(destination_device.index).upload(destination, host.data(), bytes);
    }
  }
  void fill_zero(void* destination, Device device, std::size_t bytes) override {
    device_context(device.index).fill_zero(destination, bytes);
  }
  MemoryStats memory_stats(Device device) const override {
    if (device.index < 0 || device.index >= vulkan::device_count()) return {};
    return device_context(device.index).stats();
  }

  std::unique_ptr<Stream> create_stream(Device device,
                                        std::shared_ptr<const DeviceWeights> resident_weights) override {
    return std::make_unique<StreamContext>(device, std::move(resident_weights));
  }
  bool supports(const Layer& layer, const std::vector<Shape>&, DType dtype) const override {
    if (find_kernel(kKernels, layer.type()) == nullptr) return false;
    return dtype == DType::f32 || (dtype == DType::f16 && runs_in_half(layer.type()));
  }
  std::unique_ptr<Kernel> make_typed_kernel(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                            Stream& stream) override {
    if (dtype == DType::f32) return make_kernel(layer, inputs, stream);
    auto& context = static_cast<StreamContext&>(stream);
    if (dtype != DType::f16 || !runs_in_half(layer.type()) || !context.context().physical().fp16_storage) {
      return nullptr;
    }
    const HalfKernels half(context);
    return make_kernel(layer, inputs, stream);
  }
  std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs,
                                      Stream& stream) override {
    const Entry* entry = find_kernel(kKernels, layer.type());
    if (entry == nullptr) return nullptr;
    for (const Shape& s : inputs) {
      // Shaders index with 32-bit integers.
      if (s.numel() >= (std::int64_t{1} << 31)) return nullptr;
    }
    return entry->create(layer, inputs, static_cast<StreamContext&>(stream));
  }
};

}  // namespace

void VulkanKernel::backward(const Layer& layer, const std::vector<Tensor>&, const std::vector<Tensor>&,
                            const std::vector<Tensor>&, std::vector<Tensor>&, std::vector<Tensor>&) {
  throw UnsupportedError("layer '" + layer.name() + "' (" + layer.type() +
                         "): the Vulkan backend runs inference only; train on cpu or cuda");
}

bool VulkanKernel::use_subgroups(StreamContext& context) {
  const char* setting = std::getenv("ESPRESSO_VULKAN_SUBGROUPS");
  return context.context().physical().subgroup_arithmetic &&
         (setting == nullptr || std::string_view(setting) != "0");
}

const Tensor& weight(const Layer& layer, std::size_t index, StreamContext& context) {
  return context.device_weights(layer.weights()[index], "layer '" + layer.name() + "'");
}

}  // namespace vulkan

std::unique_ptr<Backend> make_vulkan_backend() { return std::make_unique<vulkan::VulkanBackend>(); }

}  // namespace espresso
