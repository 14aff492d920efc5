#include "layers/constant.h"

#include <cstring>

namespace espresso {

ConstantLayer::ConstantLayer(const LayerSpec& spec) : Layer(spec) {
  if (!spec.attrs.has("shape")) fail_model("attribute 'shape' is required");
  shape_ = Shape(spec.attrs.get_ints("shape", {}));
  for (std::int64_t d : shape_.dims()) {
    if (d < 0) fail_model("attribute 'shape' has a negative dimension: " + shape_.str());
  }
}

std::vector<Shape> ConstantLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 0, 0);
  return {shape_};
}

std::vector<Shape> ConstantLayer::weight_shapes(const std::vector<Shape>&) const { return {shape_}; }

void ConstantLayer::forward(const std::vector<Tensor>&, std::vector<Tensor>& outputs) const {
  std::memcpy(outputs[0].raw(), weights()[0].raw(), outputs[0].bytes());
}

}  // namespace espresso
