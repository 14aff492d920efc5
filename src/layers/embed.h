#pragma once

#include "layers/layer.h"

namespace espresso {

// Caffe's Embed: each input value is an index in [0, input_dim) (a whole number stored as a float) and
// becomes row W[index] (+ b): output shape = input shape + [num_output]. The indices take no gradient.
class EmbedLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit EmbedLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  bool differentiable_input(std::size_t) const override { return false; }
  std::int64_t num_output() const { return num_output_; }
  std::int64_t input_dim() const { return input_dim_; }
  bool bias_term() const { return bias_; }

 private:
  // Throws ShapeError naming the position for a value that is no index of the table.
  std::int64_t index_at(const float* indices, std::int64_t position) const;

  std::int64_t num_output_, input_dim_;
  bool bias_;
};

}  // namespace espresso
