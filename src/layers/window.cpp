#include "layers/window.h"

#include <functional>
#include <numeric>

#include "espresso/errors.h"

namespace espresso {

AxisValues::AxisValues(const Attributes& attrs, const std::string& name, std::vector<std::int64_t> fallback,
                       std::int64_t min_value)
    : name_(name), values_(attrs.get_ints(name, fallback)), given_(attrs.has(name)) {
  if (values_.empty()) {
    throw ModelError(given_ ? "attribute '" + name + "' is empty" : "attribute '" + name + "' is required");
  }
  for (std::int64_t v : values_) {
    if (v < min_value) {
      throw ModelError("attribute '" + name + "' must be at least " + std::to_string(min_value) + ", got " +
                       std::to_string(v));
    }
  }
}

std::vector<std::int64_t> AxisValues::expand(int axes) const {
  std::vector<std::int64_t> out(static_cast<std::size_t>(axes));
  for (int a = 0; a < axes; ++a) out[static_cast<std::size_t>(a)] = (*this)[a];
  return out;
}

int common_axis_count(const std::vector<const AxisValues*>& lists) {
  int axes = 1;
  for (const AxisValues* list : lists) {
    if (list->count() == 1) continue;
    if (axes != 1 && axes != list->count()) return -1;
    axes = list->count();
  }
  return axes;
}

std::int64_t dims_product(const std::vector<std::int64_t>& dims) {
  return std::accumulate(dims.begin(), dims.end(), std::int64_t{1}, std::multiplies<>());
}

std::vector<std::vector<std::int64_t>> box_coordinates(const std::vector<std::int64_t>& dims) {
  std::vector<std::vector<std::int64_t>> coords;
  std::vector<std::int64_t> c(dims.size(), 0);
  for (std::int64_t i = 0, n = dims_product(dims); i < n; ++i) {
    coords.push_back(c);
    for (std::size_t a = dims.size(); a-- > 0;) {
      if (++c[a] < dims[a]) break;
      c[a] = 0;
    }
  }
  return coords;
}

}  // namespace espresso
