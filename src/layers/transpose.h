#pragma once

#include "layers/layer.h"

namespace espresso {

// Permutes axes: output axis i is input axis `perm`[i] (default: reversed axes). A `perm` shorter than
// the rank continues with the remaining axes in increasing order, as Caffe's Permute.
class TransposeLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit TransposeLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  // Output axis i is input axis permutation(rank)[i]; throws ShapeError when `perm` does not fit.
  std::vector<int> permutation(int rank) const;

 private:
  std::vector<std::int64_t> perm_;
};

}  // namespace espresso
