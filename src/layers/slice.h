#pragma once

#include "layers/layer.h"

namespace espresso {

// Cuts the input along `axis` at `slice_points`, or into equal parts, one per output.
class SliceLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit SliceLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;

 private:
  std::int64_t axis_;
  std::vector<std::int64_t> slice_points_;
};

}  // namespace espresso
