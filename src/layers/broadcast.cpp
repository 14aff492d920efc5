#include "layers/broadcast.h"

namespace espresso {

std::vector<AttrSpec> AxesBroadcastLayer::attributes() {
  return {
      {.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{1}},
      {.name = "num_axes", .type = AttrType::integer, .fallback = std::int64_t{1}, .min = -1},
  };
}

AxesBroadcastLayer::AxesBroadcastLayer(const LayerSpec& spec)
    : Layer(spec), axis_(spec.attrs.require_int("axis")), num_axes_(spec.attrs.require_int("num_axes")) {}

AxesBroadcastLayer::Span AxesBroadcastLayer::span(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 2);
  const Shape& x = inputs[0];
  const bool given = inputs.size() == 2;
  const std::int64_t covered = given ? inputs[1].rank() : num_axes_;
  // A scalar parameter covers no axis, so `axis` does not matter (as in Caffe).
  if (covered == 0) return {0, 0};
  const std::optional<int> first = resolve_axis(axis_, x.rank());
  if (!first) fail_shape("axis " + std::to_string(axis_) + " is out of range for input shape " + x.str());
  const std::int64_t end = covered == -1 ? x.rank() : *first + covered;
  if (end > x.rank()) {
    fail_shape("axis " + std::to_string(axis_) + " with " + std::to_string(covered) +
               " axes runs past the end of input shape " + x.str());
  }
  if (given) {
    for (int i = 0; i < inputs[1].rank(); ++i) {
      if (inputs[1][i] != x[*first + i]) {
        fail_shape("input 1 of shape " + inputs[1].str() + " does not match input 0 of shape " + x.str() +
                   " from axis " + std::to_string(*first));
      }
    }
  }
  return {*first, static_cast<int>(end)};
}

std::vector<Shape> AxesBroadcastLayer::output_shapes(const std::vector<Shape>& inputs) const {
  span(inputs);
  return {inputs[0]};
}

Shape AxesBroadcastLayer::parameter_shape(const std::vector<Shape>& inputs) const {
  const Span s = span(inputs);
  const auto& dims = inputs[0].dims();
  return Shape(std::vector<std::int64_t>(dims.begin() + s.first, dims.begin() + s.end));
}

AxisSplit AxesBroadcastLayer::split(const std::vector<Shape>& inputs) const {
  const Span s = span(inputs);
  return split_at(inputs[0], s.first, s.end);
}

}  // namespace espresso
