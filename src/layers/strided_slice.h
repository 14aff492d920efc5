#pragma once

#include "layers/layer.h"

namespace espresso {

// Takes start:end:step along each of `axes` (default 0, 1, ...), numpy style: negative starts and
// ends count from the end, out-of-range ones are clamped, negative steps walk backwards.
// `starts`, `ends` (required), `steps` (all 1).
class StridedSliceLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit StridedSliceLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  // Per input axis: the first index taken, the step and the number of indices taken.
  void resolve(const Shape& in, std::vector<std::int64_t>& first, std::vector<std::int64_t>& step,
               std::vector<std::int64_t>& count) const;

 private:
  template <class Visit>
  void walk(const Shape& in, Visit visit) const;

  std::vector<std::int64_t> starts_, ends_, axes_, steps_;
};

}  // namespace espresso
