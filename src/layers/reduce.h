#pragma once

#include "layers/layer.h"

namespace espresso {

// Reduces the `axes` (default: all) by `operation`: mean, sum, max, min, prod, sum_square, l1, l2,
// log_sum, log_sum_exp. `keepdims` (1) keeps the reduced axes with size 1.
class ReduceLayer final : public Layer {
 public:
  enum class Op { mean, sum, max, min, prod, sum_square, l1, l2, log_sum, log_sum_exp };

  static const LayerSchema& schema();
  explicit ReduceLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  // max and min pass their gradient to the first element (in row-major order) equal to the result;
  // prod's gradient is the product of the other elements, exact when some are zero.
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  Op op() const { return op_; }
  // Per axis of `in`, whether it is reduced; throws ShapeError for an axis out of range.
  std::vector<bool> reduced_axes(const Shape& in) const;

 private:
  Op op_;
  std::vector<std::int64_t> axes_;
  bool keepdims_;
};

}  // namespace espresso
