// Per-axis window attributes shared by the convolution-like layers (docs/layers.md: `kernel`,
// `stride`, `pad`, `dilation`, `output_pad`): one value for every spatial axis, or one per axis.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "espresso/graph.h"

namespace espresso {

class AxisValues {
 public:
  AxisValues() = default;
  // Reads `name`, falling back to `fallback` (an empty fallback makes the attribute required).
  // Throws ModelError naming the attribute when it is missing, empty or holds a value below
  // `min_value`.
  AxisValues(const Attributes& attrs, const std::string& name, std::vector<std::int64_t> fallback,
             std::int64_t min_value);

  const std::string& name() const { return name_; }
  bool given() const { return given_; }
  // Number of values as written: 1 (applies to every axis) or one per axis.
  int count() const { return static_cast<int>(values_.size()); }
  bool fits(int axes) const { return count() == 1 || count() == axes; }
  std::int64_t operator[](int axis) const {
    return values_[count() == 1 ? 0 : static_cast<std::size_t>(axis)];
  }
  // The values expanded to `axes` axes; call only when fits(axes).
  std::vector<std::int64_t> expand(int axes) const;

 private:
  std::string name_;
  std::vector<std::int64_t> values_;
  bool given_ = false;
};

// The number of spatial axes the given lists agree on (1 when all are single values), or -1 when
// two of them give different per-axis counts.
int common_axis_count(const std::vector<const AxisValues*>& lists);

std::int64_t dims_product(const std::vector<std::int64_t>& dims);

// Every coordinate of a box of `dims` in row-major order, the order of tensor elements; for the
// reference kernels' N-D loops.
std::vector<std::vector<std::int64_t>> box_coordinates(const std::vector<std::int64_t>& dims);

}  // namespace espresso
