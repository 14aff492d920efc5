// Loop (ONNX Loop semantics): runs the body (subgraph 0) while the iteration count is below the trip
// count and the condition holds, carrying values from one iteration to the next and stacking the
// body's scan outputs along a new first axis. Inputs: [trip count] [condition] carried... captured...;
// the body takes iteration, condition, carried..., captured... and gives condition, carried..., scans....
#pragma once

#include "layers/control_flow.h"

namespace espresso {

class LoopLayer final : public ControlFlowLayer {
 public:
  static const LayerSchema& schema();
  explicit LoopLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;

 private:
  bool has_trip_count_ = false, has_condition_ = false;
  std::size_t carried_ = 0, captured_ = 0, scans_ = 0;
};

}  // namespace espresso
