#include "layers/labeled.h"

#include <cmath>
#include <sstream>

namespace espresso {

std::vector<AttrSpec> LabeledLayer::attributes() {
  return {
      {.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{1}},
      {.name = "ignore_label", .type = AttrType::integer, .default_text = "none"},
  };
}

LabeledLayer::LabeledLayer(const LayerSpec& spec) : Layer(spec), axis_(spec.attrs.require_int("axis")) {
  if (spec.attrs.has("ignore_label")) ignore_label_ = spec.attrs.require_int("ignore_label");
}

AxisSplit LabeledLayer::split(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, 2);
  const Shape& scores = inputs[0];
  const std::optional<int> axis = resolve_axis(axis_, scores.rank());
  if (!axis)
    fail_shape("axis " + std::to_string(axis_) + " is out of range for scores of shape " + scores.str());
  const AxisSplit s = split_at(scores, *axis, *axis + 1);
  if (s.outer * s.inner != inputs[1].numel()) {
    fail_shape("scores of shape " + scores.str() + " need " + std::to_string(s.outer * s.inner) +
               " labels (one per position outside axis " + std::to_string(*axis) + "), got labels of shape " +
               inputs[1].str());
  }
  return s;
}

std::optional<std::int64_t> LabeledLayer::label_at(const float* labels, std::int64_t index,
                                                   std::int64_t classes) const {
  const float value = labels[index];
  if (value == std::nearbyint(value) && std::abs(value) < 1e15f) {
    const auto label = static_cast<std::int64_t>(value);
    if (ignore_label_ && label == *ignore_label_) return std::nullopt;
    if (label >= 0 && label < classes) return label;
  }
  std::ostringstream what;
  what << "label " << index << " is " << value << ", not a class index in [0, " << classes << ")";
  throw DataError(describe(what.str()));
}

}  // namespace espresso
