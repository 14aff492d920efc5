// If: runs the then (subgraph 0) or else (subgraph 1) graph on its other inputs, chosen by input 0 (one
// value, true when not 0) at run time. Both subgraphs take the layer's inputs after the condition.
#pragma once

#include "layers/control_flow.h"

namespace espresso {

class IfLayer final : public ControlFlowLayer {
 public:
  static const LayerSchema& schema();
  explicit IfLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;

 private:
  std::size_t captured_ = 0;
};

}  // namespace espresso
