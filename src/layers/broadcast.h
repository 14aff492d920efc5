// Base of Scale and Bias: a parameter tensor that covers a run of the input's axes and is
// broadcast over the others. It is learned, or given as input 1 (Caffe's two-input form).
#pragma once

#include "layers/axis.h"
#include "layers/layer.h"

namespace espresso {

class AxesBroadcastLayer : public Layer {
 public:
  // `axis` and `num_axes`, for the schemas of Scale and Bias.
  static std::vector<AttrSpec> attributes();
  explicit AxesBroadcastLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  bool in_place() const override { return true; }
  // The parameter's shape: input 1's shape in the two-input form, else input 0's covered axes.
  Shape parameter_shape(const std::vector<Shape>& inputs) const;
  // Input 0 as outer x channels x inner, where channels counts the parameter's elements.
  AxisSplit split(const std::vector<Shape>& inputs) const;

 private:
  struct Span {
    int first;
    int end;
  };
  // The covered axes of input 0; throws ShapeError when they do not fit.
  Span span(const std::vector<Shape>& inputs) const;

  std::int64_t axis_;
  std::int64_t num_axes_;
};

}  // namespace espresso
