// DynamicSlice: numpy slicing as StridedSlice, with the starts and ends as inputs computed at run time
// (ONNX Slice whose starts or ends are not constants, as a Loop body that slices at the iteration
// number). The output's shape follows from the values, so it is known only once the layer ran: the
// executor plans again when it changes (docs/control_flow.md).
#pragma once

#include "layers/control_flow.h"

namespace espresso {

class DynamicSliceLayer final : public ValueShapedLayer {
 public:
  static const LayerSchema& schema();
  explicit DynamicSliceLayer(const LayerSpec& spec) : ValueShapedLayer(spec) {}
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  bool differentiable_input(std::size_t input) const override { return input == 0; }
};

}  // namespace espresso
