#include "backends/cpu/cpu_backend.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <string_view>
#include <thread>

#include "backends/backend.h"
#include "backends/cpu/quantized_convolution.h"
#include "core/half.h"
#include "core/parallel.h"
#include "espresso/errors.h"

namespace espresso {
namespace cpu {
namespace {

using KernelFactory = std::unique_ptr<Kernel> (*)(const Layer& layer, const std::vector<Shape>& inputs);

constexpr KernelEntry<KernelFactory> kKernels[] = {
#define ESPRESSO_KERNEL(type, stem) {#type, make_##stem},
#include "cpu_kernels.inc"
#undef ESPRESSO_KERNEL
};

std::string processor_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "CPU";
}

void expect_host(const Tensor& tensor, const char* what) {
  if (!tensor.device().is_cpu() || tensor.dtype() != DType::f32) {
    throw DeviceError(std::string(what) + ": expected an f32 tensor on cpu, got " + dtype_name(tensor.dtype()) +
                      " on " + tensor.device().str());
  }
}

// Work runs as it is queued; marks time the wall clock.
class HostStream final : public Stream {
 public:
  Device device() const override { return Device::cpu(); }
  void synchronize() override {}
  void mark_start() override { start_ = std::chrono::steady_clock::now(); }
  void mark_end() override { end_ = std::chrono::steady_clock::now(); }
  double elapsed_ms() override { return std::chrono::duration<double, std::milli>(end_ - start_).count(); }

  void fill(Tensor& tensor, float value) override {
    expect_host(tensor, "fill");
    std::fill_n(tensor.data<float>(), tensor.numel(), value);
  }
  void apply_update(const train::UpdateRule& rule, Tensor& value, Tensor& grad, Tensor& history,
                    Tensor* second) override {
    for (const Tensor* t : std::initializer_list<const Tensor*>{&value, &grad, &history, second}) {
      if (t != nullptr) expect_host(*t, "solver update");
    }
    float* w = value.data<float>();
    float* g = grad.data<float>();
    float* h = history.data<float>();
    float* u = second ? second->data<float>() : nullptr;
    float unused = 0.0f;
    for (std::int64_t i = 0, n = grad.numel(); i < n; ++i)
      g[i] = train::apply_update(rule, w[i], g[i], h[i], u ? u[i] : unused);
  }
  void convert(const Tensor& source, Tensor& destination) override {
    if (!source.device().is_cpu() || !destination.device().is_cpu() ||
        source.numel() != destination.numel()) {
      throw DeviceError("convert: expected two cpu tensors of " + std::to_string(destination.numel()) +
                        " elements");
    }
    const std::int64_t n = source.numel();
    const DType from = source.dtype(), to = destination.dtype();
    if (from == to) {
      std::memcpy(destination.raw(), source.raw(), source.bytes());
    } else if (from == DType::f32 && (to == DType::f16 || to == DType::bf16)) {
      const float* x = source.data<float>();
      auto* y = static_cast<std::uint16_t*>(destination.raw());
      for (std::int64_t i = 0; i < n; ++i)
        y[i] = to == DType::f16 ? float_to_half(x[i]) : float_to_bf16(x[i]);
    } else if (to == DType::f32 && (from == DType::f16 || from == DType::bf16)) {
      const auto* x = static_cast<const std::uint16_t*>(source.raw());
      float* y = destination.data<float>();
      for (std::int64_t i = 0; i < n; ++i)
        y[i] = from == DType::f16 ? half_to_float(x[i]) : bf16_to_float(x[i]);
    } else {
      Stream::convert(source, destination);
    }
  }
  double sum_of_squares(const Tensor& tensor) override {
    expect_host(tensor, "gradient norm");
    const float* x = tensor.data<float>();
    double sum = 0.0;
    for (std::int64_t i = 0; i < tensor.numel(); ++i) sum += static_cast<double>(x[i]) * x[i];
    return sum;
  }

 private:
  std::chrono::steady_clock::time_point start_, end_;
};

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  DeviceType type() const override { return DeviceType::cpu; }
  int device_count() const override { return 1; }
  void require_device(Device device) const override {
    if (!device.is_cpu() || device.index != 0) throw DeviceError("device " + device.str() + " is not the CPU");
  }
  std::vector<DeviceInfo> devices() const override {
    DeviceInfo info;
    info.name = processor_name();
    info.multiprocessors = static_cast<int>(std::thread::hardware_concurrency());
    return {info};
  }

  std::shared_ptr<void> allocate(std::size_t bytes, Device device, const std::string& purpose) override {
    return host_memory().allocate(bytes, device, purpose);
  }
  void copy(void* destination, Device destination_device, const void* source, Device source_device,
            std::size_t bytes) override {
    host_memory().copy(destination, destination_device, source, source_device, bytes);
  }
  void fill_zero(void* destination, Device device, std::size_t bytes) override {
    host_memory().fill_zero(destination, device, bytes);
  }

  std::unique_ptr<Stream> create_stream(Device device, std::shared_ptr<const DeviceWeights>) override {
    require_device(device);
    return std::make_unique<HostStream>();
  }
  // Every layer has its reference kernel, in f32; convolutions also compute in int8 (Precision::int8,
  // fp32 in and out).
  bool supports(const Layer& layer, const std::vector<Shape>&, DType dtype) const override {
    return dtype == DType::f32 || (dtype == DType::i8 && layer.type() == "Convolution" && !layer.training());
  }
  std::unique_ptr<Kernel> make_typed_kernel(const Layer& layer, const std::vector<Shape>& inputs, DType dtype,
                                            Stream& stream) override {
    if (dtype == DType::i8) return supports(layer, inputs, dtype) ? int8_convolution_kernel(layer, inputs) : nullptr;
    return Backend::make_typed_kernel(layer, inputs, dtype, stream);
  }
  std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs, Stream&) override {
    if (const auto* entry = find_kernel(kKernels, layer.type())) {
      if (std::unique_ptr<Kernel> kernel = entry->create(layer, inputs)) return kernel;
    }
    return std::make_unique<ReferenceKernel>(layer);
  }
};

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<cpu::CpuBackend>(); }

}  // namespace espresso
