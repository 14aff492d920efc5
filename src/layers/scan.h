// Scan (ONNX Scan, opset 9 and later): runs the body (subgraph 0) once per slice of the scan inputs along
// their scan axes, carrying state values, and stacks the body's scan outputs along their output axes.
// Inputs: states..., scan inputs..., captured...; the body takes states..., slices..., captured...
// and gives states..., scan output slices....
#pragma once

#include "layers/control_flow.h"

namespace espresso {

class ScanLayer final : public ControlFlowLayer {
 public:
  static const LayerSchema& schema();
  explicit ScanLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;

 private:
  std::size_t states_ = 0, scan_inputs_ = 0, scan_outputs_ = 0, captured_ = 0;
  bool batched_ = false;
  std::vector<int> input_axes_, output_axes_;
  std::vector<bool> input_reversed_, output_reversed_;
  // The sequence length and the body's input shapes for these layer inputs.
  std::int64_t sequence_length(const std::vector<Shape>& inputs) const;
  std::vector<Shape> body_inputs(const std::vector<Shape>& inputs) const;
  // Batched (Scan-8): the common size of axis 0 of the states and scan inputs.
  std::int64_t batch_size(const std::vector<Shape>& inputs) const;
  // The output shapes and the scan of one item (without a batch axis).
  std::vector<Shape> item_shapes(const std::vector<Shape>& inputs) const;
  void scan_item(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const;
};

}  // namespace espresso
