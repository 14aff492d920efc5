// Layers that map each output element to input positions, on Vulkan: Pad, Transpose and StridedSlice
// (up to 6 axes; more run on the CPU).
#include "backends/vulkan/kernels.h"
#include "layers/pad.h"
#include "layers/strided_slice.h"
#include "layers/transpose.h"

namespace espresso::vulkan {
namespace {

constexpr int kMaxRank = 6;

std::vector<std::int64_t> contiguous_strides(const std::vector<std::int64_t>& sizes) {
  std::vector<std::int64_t> strides(sizes.size(), 1);
  for (std::size_t k = sizes.size(); k-- > 1;) strides[k - 1] = strides[k] * sizes[k];
  return strides;
}

class PadKernel final : public VulkanKernel {
 public:
  PadKernel(const PadLayer& pad, const Shape& in, const Shape& out, StreamContext& context) : VulkanKernel(context) {
    params_.n = u32(out.numel());
    params_.rank = u32(in.rank());
    params_.mode = static_cast<std::uint32_t>(pad.mode());
    params_.value = pad.value();
    for (int k = 0; k < in.rank(); ++k) {
      params_.in_size[k] = static_cast<std::int32_t>(in[k]);
      params_.out_size[k] = static_cast<std::int32_t>(out[k]);
      params_.begin[k] = static_cast<std::int32_t>(pad.pads()[static_cast<std::size_t>(k)]);
    }
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (params_.n == 0) return;
    context_.dispatch(shader("pad"), {buffer(inputs[0]), buffer(outputs[0])}, params_, groups(params_.n));
  }

 private:
  struct {
    std::uint32_t n = 0, rank = 0, mode = 0;
    float value = 0;
    std::int32_t in_size[kMaxRank] = {}, out_size[kMaxRank] = {}, begin[kMaxRank] = {};
  } params_;
};

class StridedGatherKernel final : public VulkanKernel {
 public:
  StridedGatherKernel(std::int64_t base, const std::vector<std::int64_t>& sizes, const std::vector<std::int64_t>& strides,
                      StreamContext& context)
      : VulkanKernel(context) {
    std::int64_t n = 1;
    for (std::int64_t s : sizes) n *= s;
    params_.n = u32(n);
    params_.rank = u32(static_cast<std::int64_t>(sizes.size()));
    params_.base = static_cast<std::int32_t>(base);
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      params_.size[k] = u32(sizes[k]);
      params_.stride[k] = static_cast<std::int32_t>(strides[k]);
    }
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (params_.n == 0) return;
    context_.dispatch("strided_gather", {buffer(inputs[0]), buffer(outputs[0])}, params_, groups(params_.n));
  }

 private:
  struct {
    std::uint32_t n = 0, rank = 0;
    std::int32_t base = 0;
    std::uint32_t size[kMaxRank] = {};
    std::int32_t stride[kMaxRank] = {};
  } params_;
};

}  // namespace

std::unique_ptr<Kernel> make_pad(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  const Shape& in = inputs[0];
  if (in.rank() > kMaxRank) return nullptr;
  return std::make_unique<PadKernel>(static_cast<const PadLayer&>(layer), in, layer.output_shapes(inputs)[0], context);
}

std::unique_ptr<Kernel> make_transpose(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  const Shape& in = inputs[0];
  if (in.rank() > kMaxRank) return nullptr;
  const std::vector<int> perm = static_cast<const TransposeLayer&>(layer).permutation(in.rank());
  const std::vector<std::int64_t> in_strides = contiguous_strides(in.dims());
  std::vector<std::int64_t> sizes, strides;
  for (int axis : perm) {
    sizes.push_back(in[axis]);
    strides.push_back(in_strides[static_cast<std::size_t>(axis)]);
  }
  return std::make_unique<StridedGatherKernel>(0, sizes, strides, context);
}

std::unique_ptr<Kernel> make_strided_slice(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context) {
  const Shape& in = inputs[0];
  if (in.rank() > kMaxRank) return nullptr;
  std::vector<std::int64_t> first, step, count;
  static_cast<const StridedSliceLayer&>(layer).resolve(in, first, step, count);
  const std::vector<std::int64_t> in_strides = contiguous_strides(in.dims());
  std::vector<std::int64_t> strides(in_strides.size());
  std::int64_t base = 0;
  for (std::size_t k = 0; k < in_strides.size(); ++k) {
    base += first[k] * in_strides[k];
    strides[k] = step[k] * in_strides[k];
  }
  return std::make_unique<StridedGatherKernel>(base, count, strides, context);
}

}  // namespace espresso::vulkan
