#include "layers/slice.h"

#include <algorithm>

#include "layers/axis.h"

namespace espresso {

const LayerSchema& SliceLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{1}},
              {.name = "slice_points", .type = AttrType::integers, .min = 1, .default_text = "equal parts"},
          },
      .weights = "–",
      .notes = "one output per part",
  };
  return schema;
}

SliceLayer::SliceLayer(const LayerSpec& spec) : Layer(spec), axis_(spec.attrs.require_int("axis")) {
  if (spec.outputs.empty()) fail_model("needs at least one output");
  if (spec.attrs.has("slice_points")) slice_points_ = spec.attrs.require_ints("slice_points");
  if (!slice_points_.empty() && slice_points_.size() + 1 != spec.outputs.size()) {
    fail_model("attribute 'slice_points' has " + std::to_string(slice_points_.size()) + " values for " +
               std::to_string(spec.outputs.size()) + " outputs; it needs one fewer than the outputs");
  }
  for (std::size_t i = 1; i < slice_points_.size(); ++i) {
    if (slice_points_[i] <= slice_points_[i - 1])
      fail_model("attribute 'slice_points' must be strictly increasing");
  }
}

std::vector<Shape> SliceLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const Shape& x = inputs[0];
  const std::optional<int> axis = resolve_axis(axis_, x.rank());
  if (!axis) fail_shape("axis " + std::to_string(axis_) + " is out of range for input shape " + x.str());
  const std::int64_t length = x[*axis];
  const auto parts = static_cast<std::int64_t>(spec().outputs.size());
  std::vector<std::int64_t> bounds{0};
  if (slice_points_.empty()) {
    if (length % parts != 0) {
      fail_shape("axis " + std::to_string(*axis) + " of input shape " + x.str() + " does not split into " +
                 std::to_string(parts) + " equal parts");
    }
    for (std::int64_t p = 1; p <= parts; ++p) bounds.push_back(p * (length / parts));
  } else {
    if (slice_points_.back() >= length) {
      fail_shape("slice point " + std::to_string(slice_points_.back()) + " is past the end of axis " +
                 std::to_string(*axis) + " of input shape " + x.str());
    }
    bounds.insert(bounds.end(), slice_points_.begin(), slice_points_.end());
    bounds.push_back(length);
  }
  std::vector<Shape> shapes;
  for (std::size_t p = 0; p + 1 < bounds.size(); ++p) {
    Shape part = x;
    part[*axis] = bounds[p + 1] - bounds[p];
    shapes.push_back(part);
  }
  return shapes;
}

void SliceLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& in = inputs[0].shape();
  const int axis = *resolve_axis(axis_, in.rank());
  const std::int64_t outer = in.count(0, axis), inner = in.count(axis + 1);
  const float* x = inputs[0].data<float>();
  std::int64_t offset = 0;
  for (Tensor& output : outputs) {
    const std::int64_t block = output.shape()[axis] * inner;
    float* y = output.data<float>();
    for (std::int64_t o = 0; o < outer; ++o) {
      const float* source = x + o * in[axis] * inner + offset;
      std::copy(source, source + block, y + o * block);
    }
    offset += block;
  }
}

void SliceLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                          const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                          std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const Shape& in = inputs[0].shape();
  const int axis = *resolve_axis(axis_, in.rank());
  const std::int64_t outer = in.count(0, axis), inner = in.count(axis + 1);
  float* dx = input_grads[0].data<float>();
  std::int64_t offset = 0;
  for (const Tensor& grad : output_grads) {
    const std::int64_t block = grad.shape()[axis] * inner;
    const float* dy = grad.data<float>();
    for (std::int64_t o = 0; o < outer; ++o) {
      float* target = dx + o * in[axis] * inner + offset;
      for (std::int64_t i = 0; i < block; ++i) target[i] += dy[o * block + i];
    }
    offset += block;
  }
}

}  // namespace espresso
