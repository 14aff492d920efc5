#pragma once

#include "layers/layer.h"

namespace espresso {

// Caffe's Reshape: replaces the axes [axis, axis + num_axes) by `shape`, where 0 copies the
// input dimension at the same place and one -1 is inferred from the element count.
class ReshapeLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit ReshapeLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;

 private:
  std::vector<std::int64_t> shape_;
  std::int64_t axis_;
  std::int64_t num_axes_;
};

}  // namespace espresso
