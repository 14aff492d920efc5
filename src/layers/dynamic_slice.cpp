#include "layers/dynamic_slice.h"

#include <algorithm>
#include <cmath>

#include "layers/registry.h"

namespace espresso {

const LayerSchema& DynamicSliceLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "axes", .type = AttrType::integers, .default_text = "0, 1, ..."},
              {.name = "steps", .type = AttrType::integers, .default_text = "all 1"},
          },
      .weights = "–",
      .notes = "inputs: data, starts, ends (whole numbers as floats); StridedSlice's numpy slicing with the "
               "starts and ends read at run time; the output shape follows from them (the net replans when it "
               "changes); inference only",
  };
  return schema;
}

std::vector<Shape> DynamicSliceLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 3, 3);
  if (inputs[1].numel() != inputs[2].numel())
    fail_shape("starts " + inputs[1].str() + " and ends " + inputs[2].str() + " differ in length");
  // Known only from the values: the last run's shape, else the whole input.
  return {remembered(0, inputs[0])};
}

void DynamicSliceLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  LayerSpec slice;
  slice.name = name();
  slice.type = "StridedSlice";
  slice.inputs = {"data"};
  slice.outputs = {"sliced"};
  for (const auto& [key, index] : {std::pair<const char*, std::size_t>{"starts", 1}, {"ends", 2}}) {
    std::vector<std::int64_t> values;
    for (float v : inputs[index].to_vector()) {
      // Beyond ±2^62 StridedSlice clamps to the axis anyway.
      const double clamped = std::clamp(static_cast<double>(v), -4.6e18, 4.6e18);
      values.push_back(static_cast<std::int64_t>(clamped));
    }
    slice.attrs.set(key, values);
  }
  for (const char* key : {"axes", "steps"})
    if (spec().attrs.has(key)) slice.attrs.set(key, spec().attrs.get_ints(key, {}));
  const auto layer = create_layer(slice);
  const Shape shape = layer->output_shapes({inputs[0].shape()}).at(0);
  if (shape != outputs[0].shape()) replan({shape});
  std::vector<Tensor> in{inputs[0]};
  layer->forward(in, outputs);
}

}  // namespace espresso
