#include "layers/constant.h"

#include <cstring>

namespace espresso {

const LayerSchema& ConstantLayer::schema() {
  static const LayerSchema schema{
      .attributes = {{.name = "shape", .type = AttrType::integers, .required = true, .min = 0}},
      .weights = "value: `shape` (state, not learned)",
      .notes = "no inputs; outputs its weight",
  };
  return schema;
}

ConstantLayer::ConstantLayer(const LayerSpec& spec) : Layer(spec), shape_(spec.attrs.require_ints("shape")) {}

std::vector<Shape> ConstantLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 0, 0);
  return {shape_};
}

std::vector<Shape> ConstantLayer::weight_shapes(const std::vector<Shape>&) const { return {shape_}; }

void ConstantLayer::forward(const std::vector<Tensor>&, std::vector<Tensor>& outputs) const {
  std::memcpy(outputs[0].raw(), weights()[0].raw(), outputs[0].bytes());
}

}  // namespace espresso
