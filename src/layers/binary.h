#pragma once

#include "layers/layer.h"

namespace espresso {

// Element-wise a (op) b with numpy broadcasting: shapes are aligned at their last axes and a
// dimension of 1 stretches. `operation`: add, sub, mul, div, max, min, pow.
class BinaryLayer final : public Layer {
 public:
  enum class Op { add, sub, mul, div, max, min, pow };

  explicit BinaryLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  // Safe: when the output has input 0's size, input 0 is not broadcast and is read before written.
  bool in_place() const override { return true; }
  Op op() const { return op_; }

 private:
  Op op_;
};

// The numpy broadcast of two shapes; throws ShapeError when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b);

}  // namespace espresso
