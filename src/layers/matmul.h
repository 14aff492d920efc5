#pragma once

#include "layers/layer.h"

namespace espresso {

// numpy.matmul of two inputs: the last two axes multiply (M x K times K x N), the leading axes
// broadcast; a 1-D operand is a row (first) or column (second) vector whose axis is dropped.
class MatMulLayer final : public Layer {
 public:
  // The operands as broadcast batches of matrices.
  struct Plan {
    Shape out;
    std::int64_t m = 0, k = 0, n = 0;
    std::vector<std::int64_t> batch;                 // broadcast leading dims
    std::vector<std::int64_t> a_strides, b_strides;  // per batch dim, in matrices; 0 when broadcast
  };

  static const LayerSchema& schema();
  explicit MatMulLayer(const LayerSpec& spec) : Layer(spec) {}
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  // Per batch: da += dy · bᵀ and db += aᵀ · dy; an operand broadcast over a batch axis sums the
  // gradients of every batch it takes part in.
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  std::int64_t macs(const std::vector<Shape>& inputs) const override;
  Plan plan(const Shape& a, const Shape& b) const;
};

}  // namespace espresso
