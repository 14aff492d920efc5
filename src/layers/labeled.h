// Base of layers that score predictions against labels (Accuracy, SoftmaxWithLoss): input 0 holds
// scores with classes along `axis`, input 1 one label per outer x inner position, as float values
// holding class indices.
#pragma once

#include <optional>

#include "layers/axis.h"
#include "layers/layer.h"

namespace espresso {

class LabeledLayer : public Layer {
 public:
  // `axis` (of the classes) and `ignore_label`, for the schemas of the layers built on this one.
  static std::vector<AttrSpec> attributes();
  explicit LabeledLayer(const LayerSpec& spec);
  // The scores as outer x classes x inner; throws ShapeError when the labels do not fit.
  AxisSplit split(const std::vector<Shape>& inputs) const;
  // Labels take no gradient.
  bool differentiable_input(std::size_t input) const override { return input == 0; }
  const std::optional<std::int64_t>& ignore_label() const { return ignore_label_; }

 protected:
  // The class of label `index`, or nothing when it equals `ignore_label`; throws DataError when
  // the value is not a class index.
  std::optional<std::int64_t> label_at(const float* labels, std::int64_t index, std::int64_t classes) const;

 private:
  std::int64_t axis_;
  std::optional<std::int64_t> ignore_label_;
};

}  // namespace espresso
