#pragma once

#include <cstdint>
#include <vector>

#include "layers/layer.h"

namespace espresso {

// y = x · Wᵀ + b with the input flattened to M x K from `axis`; W is num_output x K, or
// K x num_output with `transpose`.
class InnerProductLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit InnerProductLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  std::int64_t macs(const std::vector<Shape>& inputs) const override;
  bool backward_reads_outputs() const override { return false; }

  struct Dims {
    int axis;                           // resolved: the first flattened axis
    std::int64_t rows, inner, outputs;  // M, K, N
  };
  // Throws ShapeError when `axis` does not fit the input.
  Dims dims(const Shape& input) const;
  bool has_bias() const { return bias_; }
  bool transposed() const { return transpose_; }

 private:
  std::int64_t num_output_;
  bool bias_;
  bool transpose_;
  int axis_;
};

}  // namespace espresso
