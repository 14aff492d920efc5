// Layers that only move data, on Vulkan: Constant copies its value, and so does PriorBox (its boxes follow
// from the shapes alone: made once on the CPU); Flatten, Reshape, Split and Dropout at inference copy their
// input whole (nothing when the executor placed the output on the input); Concat and Slice copy runs of
// floats along their axis.
#include "backends/vulkan/kernels.h"
#include "layers/axis.h"
#include "layers/dropout.h"
#include "layers/prior_box.h"

namespace espresso::vulkan {
namespace {

class WholeCopyKernel final : public VulkanKernel {
 public:
  using VulkanKernel::VulkanKernel;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    for (Tensor& out : outputs) context_.copy(inputs[0].raw(), out.raw(), inputs[0].bytes());
  }
};

// Constant: the weight, uploaded once, copied into the output each forward (the output buffer may be
// reused by other layers in between).
class ConstantKernel final : public VulkanKernel {
 public:
  ConstantKernel(Tensor value, StreamContext& context) : VulkanKernel(context), value_(std::move(value)) {}
  void forward(const std::vector<Tensor>&, std::vector<Tensor>& outputs) override {
    context_.copy(value_.raw(), outputs[0].raw(), outputs[0].bytes());
  }

 private:
  Tensor value_;
};

// Concat (joining: parts are the inputs, whole the output) or Slice (the reverse).
class AxisCopyKernel final : public VulkanKernel {
 public:
  AxisCopyKernel(bool joining, const Shape& whole, const std::vector<Shape>& parts, int axis, StreamContext& context)
      : VulkanKernel(context), joining_(joining) {
    const std::int64_t inner = whole.count(axis + 1), outer = whole.count(0, axis);
    const std::int64_t whole_run = whole[axis] * inner;
    std::int64_t start = 0;
    for (const Shape& part : parts) {
      const std::int64_t run = part[axis] * inner;
      Part p{u32(outer), u32(run), 0, 0, 0, 0};
      if (joining) {
        p.x_stride = u32(run);
        p.y_stride = u32(whole_run);
        p.y_start = u32(start);
      } else {
        p.x_stride = u32(whole_run);
        p.x_start = u32(start);
        p.y_stride = u32(run);
      }
      parts_.push_back(p);
      start += run;
    }
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    for (std::size_t i = 0; i < parts_.size(); ++i) {
      const Part& p = parts_[i];
      if (p.rows == 0 || p.run == 0) continue;
      const Tensor& from = joining_ ? inputs[i] : inputs[0];
      const Tensor& to = joining_ ? outputs[0] : outputs[i];
      context_.dispatch(shader("copy_rows"), {buffer(from), buffer(to)}, p,
                        groups(std::int64_t{p.rows} * p.run));
    }
  }

 private:
  struct Part {
    std::uint32_t rows, run, x_stride, x_start, y_stride, y_start;
  };
  bool joining_;
  std::vector<Part> parts_;
};

int layer_axis(const Layer& layer, int rank) {
  const std::optional<int> axis = resolve_axis(layer.spec().attrs.get_int("axis", 1), rank);
  return axis ? *axis : -1;
}

}  // namespace

std::unique_ptr<Kernel> copy_kernel(StreamContext& context) { return std::make_unique<WholeCopyKernel>(context); }

std::unique_ptr<Kernel> make_constant(const Layer& layer, const std::vector<Shape>&, StreamContext& context) {
  if (layer.weights()[0].dtype() != DType::f32) return nullptr;
  return std::make_unique<ConstantKernel>(weight(layer, 0, context), context);
}

std::unique_ptr<Kernel> make_prior_box(const Layer& layer, const std::vector<Shape>& inputs,
                                       StreamContext& context) {
  const Shape shape = layer.output_shapes(inputs)[0];
  // The forward reads its inputs' shapes only (never their data), and the boxes do not depend on the batch.
  std::vector<Tensor> shapes_only;
  for (const Shape& input : inputs) shapes_only.push_back(Tensor::wrap(nullptr, input, DType::f32));
  std::vector<Tensor> boxes{Tensor::empty(shape)};
  static_cast<const PriorBoxLayer&>(layer).forward(shapes_only, boxes);
  // The kernel's own memory: a later plan of the net makes a new one and this one goes with its kernel.
  Tensor on_device = context.scratch(shape, "layer '" + layer.name() + "'");
  on_device.copy_from(boxes[0]);
  return std::make_unique<ConstantKernel>(std::move(on_device), context);
}

std::unique_ptr<Kernel> make_flatten(const Layer&, const std::vector<Shape>&, StreamContext& context) {
  return copy_kernel(context);
}

std::unique_ptr<Kernel> make_reshape(const Layer&, const std::vector<Shape>&, StreamContext& context) {
  return copy_kernel(context);
}

std::unique_ptr<Kernel> make_split(const Layer&, const std::vector<Shape>&, StreamContext& context) {
  return copy_kernel(context);
}

std::unique_ptr<Kernel> make_dropout(const Layer& layer, const std::vector<Shape>&, StreamContext& context) {
  // Training draws masks; inference is the identity.
  if (layer.training()) return nullptr;
  return copy_kernel(context);
}

std::unique_ptr<Kernel> make_concat(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  const Shape joined = layer.output_shapes(inputs)[0];
  const int axis = layer_axis(layer, joined.rank());
  if (axis < 0) return nullptr;
  return std::make_unique<AxisCopyKernel>(true, joined, inputs, axis, context);
}

std::unique_ptr<Kernel> make_slice(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  const int axis = layer_axis(layer, inputs[0].rank());
  if (axis < 0) return nullptr;
  return std::make_unique<AxisCopyKernel>(false, inputs[0], layer.output_shapes(inputs), axis, context);
}

}  // namespace espresso::vulkan
