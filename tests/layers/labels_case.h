// Random cases for Accuracy and SoftmaxWithLoss: scores with classes along `axis` and one
// integer label per other position, some of them equal to `ignore_label`.
#pragma once

#include "layers/layer_test_util.h"

namespace espresso::testing {

inline LayerCase random_labels_case(Rng& rng, const std::string& type) {
  LayerCase c;
  c.spec.type = type;
  const Shape scores = random_shape(rng, 2, 5, 6);
  int axis = 1;
  if (rng.integer(0, 3) != 0) c.spec.attrs.set("axis", std::int64_t{random_axis(rng, scores.rank(), axis)});
  const bool ignore = rng.coin();
  const std::int64_t classes = scores[axis];
  const std::int64_t ignored = rng.coin() ? -1 : rng.integer(0, static_cast<int>(classes) - 1);
  if (ignore) c.spec.attrs.set("ignore_label", ignored);
  // Labels in Caffe's layout: the scores' shape without the class axis (or flat).
  std::vector<std::int64_t> label_dims;
  for (int d = 0; d < scores.rank(); ++d) {
    if (d != axis) label_dims.push_back(scores[d]);
  }
  Shape labels(label_dims);
  if (rng.coin()) labels = Shape{labels.numel()};
  c.input_shapes = {scores, labels};
  c.non_differentiable_inputs = {1};
  c.inputs.push_back(rng.values(static_cast<std::size_t>(scores.numel()), -3.0, 3.0));
  Values& values = c.inputs.emplace_back(static_cast<std::size_t>(labels.numel()));
  for (double& v : values) {
    v = ignore && rng.integer(0, 4) == 0 ? static_cast<double>(ignored)
                                         : rng.integer(0, static_cast<int>(classes) - 1);
  }
  return c;
}

// Calls visit(outer, inner, label) for every non-ignored label, from the definitions.
template <class Visit>
void for_each_label(const LayerCase& c, const Values& labels, Visit visit) {
  const Shape& s = c.input_shapes[0];
  const int axis = s.canonical_axis(static_cast<int>(c.spec.attrs.get_int("axis", 1)));
  const std::int64_t outer = product(s, 0, axis), inner = product(s, axis + 1, s.rank());
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t i = 0; i < inner; ++i) {
      const double label = labels[static_cast<std::size_t>(o * inner + i)];
      if (c.spec.attrs.has("ignore_label") &&
          label == static_cast<double>(c.spec.attrs.get_int("ignore_label", 0))) {
        continue;
      }
      visit(o, i, static_cast<std::int64_t>(label));
    }
  }
}

}  // namespace espresso::testing
