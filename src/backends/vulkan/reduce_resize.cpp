// Reduce and Resize on Vulkan (up to 6 axes; more run on the CPU).
#include "backends/vulkan/kernels.h"
#include "layers/reduce.h"
#include "layers/resize.h"

namespace espresso::vulkan {
namespace {

constexpr int kMaxRank = 6;

class ReduceKernel final : public VulkanKernel {
 public:
  ReduceKernel(const ReduceLayer& reduce, const Shape& in, StreamContext& context) : VulkanKernel(context) {
    const std::vector<bool> reduced = reduce.reduced_axes(in);
    std::vector<std::int64_t> strides(static_cast<std::size_t>(in.rank()), 1);
    for (int k = in.rank() - 1; k > 0; --k) strides[static_cast<std::size_t>(k - 1)] = strides[static_cast<std::size_t>(k)] * in[k];
    std::int64_t group = 1, outputs = 1;
    for (int k = 0; k < in.rank(); ++k) {
      const auto uk = static_cast<std::size_t>(k);
      if (reduced[uk]) {
        params_.reduced_size[params_.reduced_rank] = u32(in[k]);
        params_.reduced_stride[params_.reduced_rank++] = u32(strides[uk]);
        group *= in[k];
      } else {
        params_.kept_size[params_.kept_rank] = u32(in[k]);
        params_.kept_stride[params_.kept_rank++] = u32(strides[uk]);
        outputs *= in[k];
      }
    }
    params_.n = u32(outputs);
    params_.group = u32(group);
    params_.op = static_cast<std::uint32_t>(reduce.op());
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (params_.n == 0) return;
    context_.dispatch("reduce", {buffer(inputs[0]), buffer(outputs[0])}, params_, groups(params_.n, 64));
  }

 private:
  struct {
    std::uint32_t n = 0, group = 0, op = 0, kept_rank = 0, reduced_rank = 0;
    std::uint32_t kept_size[kMaxRank] = {}, kept_stride[kMaxRank] = {}, reduced_size[kMaxRank] = {},
                  reduced_stride[kMaxRank] = {};
  } params_;
};

class ResizeKernel final : public VulkanKernel {
 public:
  ResizeKernel(const ResizeLayer& resize, const Shape& in, const Shape& out, StreamContext& context)
      : VulkanKernel(context) {
    const std::vector<ResizeLayer::AxisTaps> taps = resize.taps(in, out);
    std::vector<std::int32_t> indices;
    std::vector<float> weights;
    params_.rank = u32(in.rank());
    params_.combinations = 1;
    params_.n = u32(out.numel());
    params_.outside = resize.extrapolation_value();
    for (int a = 0; a < in.rank(); ++a) {
      const ResizeLayer::AxisTaps& t = taps[static_cast<std::size_t>(a)];
      params_.in_size[a] = u32(in[a]);
      params_.out_size[a] = u32(out[a]);
      params_.taps[a] = static_cast<std::uint32_t>(t.count);
      params_.table[a] = u32(static_cast<std::int64_t>(indices.size()));
      params_.combinations *= static_cast<std::uint32_t>(t.count);
      for (std::int64_t i : t.index) indices.push_back(static_cast<std::int32_t>(i));
      for (double w : t.weight) weights.push_back(static_cast<float>(w));
    }
    indices.push_back(0);  // never empty
    weights.push_back(0);
    const std::string owner = "layer '" + resize.name() + "'";
    const Shape table{static_cast<std::int64_t>(indices.size())};
    auto memory = context.context().allocate(indices.size() * sizeof(std::int32_t), owner);
    indices_ = Tensor::wrap(memory.get(), table, DType::i32, context.device(), memory);
    indices_.copy_from(Tensor::wrap(indices.data(), table, DType::i32));
    weights_ = context.scratch(table, owner);
    weights_.copy_from(Tensor::wrap(weights.data(), table, DType::f32));
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (params_.n == 0) return;
    context_.dispatch("resize", {buffer(inputs[0]), buffer(indices_), buffer(weights_), buffer(outputs[0])}, params_,
                      groups(params_.n));
  }

 private:
  Tensor indices_, weights_;
  struct {
    std::uint32_t n = 0, rank = 0, combinations = 0;
    float outside = 0;
    std::uint32_t in_size[kMaxRank] = {}, out_size[kMaxRank] = {}, taps[kMaxRank] = {}, table[kMaxRank] = {};
  } params_;
};

}  // namespace

std::unique_ptr<Kernel> make_reduce(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  if (inputs[0].rank() > kMaxRank || inputs[0].numel() == 0) return nullptr;
  return std::make_unique<ReduceKernel>(static_cast<const ReduceLayer&>(layer), inputs[0], context);
}

std::unique_ptr<Kernel> make_resize(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  if (inputs[0].rank() > kMaxRank) return nullptr;
  return std::make_unique<ResizeKernel>(static_cast<const ResizeLayer&>(layer), inputs[0],
                                        layer.output_shapes(inputs)[0], context);
}

}  // namespace espresso::vulkan
