// Axis arithmetic shared by layers that work along one axis.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "espresso/tensor.h"

namespace espresso {

// `axis` resolved against `rank` (negative counts from the end), or nothing when out of range.
inline std::optional<int> resolve_axis(std::int64_t axis, int rank) {
  const std::int64_t resolved = axis < 0 ? axis + rank : axis;
  if (resolved < 0 || resolved >= rank) return std::nullopt;
  return static_cast<int>(resolved);
}

// A tensor seen as outer x channels x inner around one axis (or a run of axes).
struct AxisSplit {
  std::int64_t outer = 1;
  std::int64_t channels = 1;
  std::int64_t inner = 1;
};

inline AxisSplit split_at(const Shape& shape, int first_axis, int end_axis) {
  return {shape.count(0, first_axis), shape.count(first_axis, end_axis), shape.count(end_axis)};
}

inline std::vector<Shape> shapes_of(const std::vector<Tensor>& tensors) {
  std::vector<Shape> shapes;
  for (const Tensor& t : tensors) shapes.push_back(t.shape());
  return shapes;
}

}  // namespace espresso
