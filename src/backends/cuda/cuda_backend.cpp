#include "backends/cuda/cuda_backend.h"

#include <algorithm>
#include <iterator>
#include <string_view>

#include "backends/cuda/kernels.h"
#include "backends/host_staging.h"
#include "espresso/errors.h"

namespace espresso {
namespace cuda {
namespace {

using Entry = KernelEntry<std::unique_ptr<Kernel> (*)(const Layer& layer, const std::vector<Shape>& inputs,
                                                       StreamContext& context)>;

constexpr Entry kKernels[] = {
#define ESPRESSO_KERNEL(type, stem) {#type, make_##stem},
#include "cuda_kernels.inc"
#undef ESPRESSO_KERNEL
};

using LowpEntry = KernelEntry<std::unique_ptr<Kernel> (*)(
    const Layer& layer, const std::vector<Shape>& inputs, DType dtype, StreamContext& context)>;

constexpr LowpEntry kLowpKernels[] = {
#define ESPRESSO_KERNEL(type, stem) {#type, make_lowp_##stem},
#include "cuda_lowp_kernels.inc"
#undef ESPRESSO_KERNEL
};

constexpr LowpEntry kNhwcKernels[] = {
#define ESPRESSO_KERNEL(type, stem) {#type, make_nhwc_##stem},
#include "cuda_nhwc_kernels.inc"
#undef ESPRESSO_KERNEL
};

bool low_precision(DType dtype) { return dtype == DType::f16 || dtype == DType::bf16; }

class CudaBackend final : public Backend {
 public:
  CudaBackend() { register_host_staging(DeviceType::cuda, &cuda::allocate_pinned); }
  const char* name() const override { return "cuda"; }
  DeviceType type() const override { return DeviceType::cuda; }
  int device_count() const override { return cuda::device_count(); }
  void require_device(Device device) const override { cuda::require_device(device); }
  std::vector<DeviceInfo> devices() const override { return list_devices(); }

  std::shared_ptr<void> allocate(std::size_t bytes, Device device, const std::string& purpose) override {
    return cuda::allocate(bytes, device, purpose);
  }
  void copy(void* destination, Device destination_device, const void* source, Device source_device,
            std::size_t bytes) override {
    cuda::copy(destination, destination_device, source, source_device, bytes);
  }
  void fill_zero(void* destination, Device device, std::size_t bytes) override {
    cuda::fill_zero(destination, device, bytes);
  }
  void upload(Device device, const std::vector<UploadPiece>& pieces) override { cuda::upload(device, pieces); }
  MemoryStats memory_stats(Device device) const override { return pool_stats(device); }
  void reset_peak_memory(Device device) override { reset_pool_peak(device); }

  std::unique_ptr<Stream> create_stream(Device device,
                                        std::shared_ptr<const DeviceWeights> resident_weights) override {
    return std::make_unique<StreamContext>(device, std::move(resident_weights));
  }
  // A low-precision kernel of a layer in training mode trains only where it has its own backward
  // (Kernel::has_fast_backward); a training net runs the others in fp32. Convolutions at inference also
  // compute in int8 (Precision::int8, fp32 in and out), as on the CPU.
  bool supports(const Layer& layer, const std::vector<Shape>&, DType dtype) const override {
    if (dtype == DType::f32) return find_kernel(kKernels, layer.type()) != nullptr;
    if (dtype == DType::i8) return layer.type() == "Convolution" && !layer.training();
    return low_precision(dtype) && find_kernel(kLowpKernels, layer.type()) != nullptr;
  }
  std::unique_ptr<Kernel> make_typed_kernel(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                            Stream& stream) override {
    if (dtype == DType::f32) return make_kernel(layer, inputs, stream);
    if (dtype == DType::i8) {
      if (!supports(layer, inputs, dtype)) return nullptr;
      return int8_convolution_kernel(layer, inputs, static_cast<StreamContext&>(stream));
    }
    const LowpEntry* entry = low_precision(dtype) ? find_kernel(kLowpKernels, layer.type()) : nullptr;
    if (entry == nullptr) return nullptr;
    return entry->create(layer, inputs, dtype, static_cast<StreamContext&>(stream));
  }
  std::unique_ptr<Kernel> make_channels_last_kernel(const Layer& layer, const std::vector<Shape>& inputs,
                                                    DType dtype, Stream& stream) override {
    if (!low_precision(dtype) || layer.training()) return nullptr;
    // Element-wise layers and copies (Dropout at inference) place nothing by position: their kernel serves.
    constexpr std::string_view kLayoutFree[] = {"ReLU", "Activation", "Dropout", "Split"};
    if (std::find(std::begin(kLayoutFree), std::end(kLayoutFree), layer.type()) != std::end(kLayoutFree))
      return make_typed_kernel(layer, inputs, dtype, stream);
    const LowpEntry* entry = find_kernel(kNhwcKernels, layer.type());
    if (entry == nullptr) return nullptr;
    return entry->create(layer, inputs, dtype, static_cast<StreamContext&>(stream));
  }
  std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs,
                                      Stream& stream) override {
    const Entry* entry = find_kernel(kKernels, layer.type());
    if (entry == nullptr) return nullptr;
    return entry->create(layer, inputs, static_cast<StreamContext&>(stream));
  }
};

}  // namespace
}  // namespace cuda

std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<cuda::CudaBackend>(); }

}  // namespace espresso
