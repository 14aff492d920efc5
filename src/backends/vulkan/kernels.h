// The Vulkan kernels' factories, generated from the files in backends/vulkan/ (one file per layer
// family, each with its GLSL shader in shaders/). Each returns nullptr for configurations it does not
// cover, and the executor runs that layer on the CPU. Kernels record their work on the stream
// (StreamContext::dispatch); shapes travel as push constants, so one pipeline serves every shape.
// Inference only: training nets stay on the CPU or CUDA (has_fast_backward() is false).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backends/kernel.h"
#include "backends/vulkan/context.h"

namespace espresso::vulkan {

#define ESPRESSO_KERNEL(type, stem)                                                          \
  std::unique_ptr<Kernel> make_##stem(const Layer& layer, const std::vector<Shape>& inputs, \
                                      StreamContext& context);
#include "vulkan_kernels.inc"
#undef ESPRESSO_KERNEL

class VulkanKernel : public Kernel {
 public:
  explicit VulkanKernel(StreamContext& context)
      : context_(context), half_(context.kernel_dtype() == DType::f16), subgroups_(use_subgroups(context)) {}
  const char* name() const override { return "vulkan"; }
  // Training needs backward passes the Vulkan backend does not have.
  void backward(const Layer& layer, const std::vector<Tensor>&, const std::vector<Tensor>&,
                const std::vector<Tensor>&, std::vector<Tensor>&, std::vector<Tensor>&) override;

 protected:
  // The shader `stem`: its _f16 variant (fp16 activations) in a kernel made for an fp16 net, and of that
  // its _subgroup variant where the shader has one and the device subgroup arithmetic.
  std::string shader(std::string_view stem) const {
    std::string name = std::string(stem) + (half_ ? "_f16" : "");
    if (subgroups_ && has_shader(name + "_subgroup")) name += "_subgroup";
    return name;
  }

  StreamContext& context_;
  bool half_;

 private:
  // Subgroup arithmetic in compute shaders, unless ESPRESSO_VULKAN_SUBGROUPS=0 (tests of the plain variants).
  static bool use_subgroups(StreamContext& context);

  bool subgroups_;
};

// Work groups of `size` invocations for n items (shaders loop over what a capped grid leaves).
inline std::uint32_t groups(std::int64_t n, std::int64_t size = 256) {
  return static_cast<std::uint32_t>(std::max<std::int64_t>(1, (n + size - 1) / size));
}

inline std::uint32_t u32(std::int64_t v) { return static_cast<std::uint32_t>(v); }

// The layer's weight `index` on the device.
const Tensor& weight(const Layer& layer, std::size_t index, StreamContext& context);

// Input 0 copied to output 0 (and every other output): Flatten, Reshape, Split, Dropout at inference.
std::unique_ptr<Kernel> copy_kernel(StreamContext& context);

}  // namespace espresso::vulkan
