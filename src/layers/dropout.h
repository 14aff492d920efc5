#pragma once

#include "layers/unary.h"

namespace espresso {

// Identity at inference: Caffe scales kept units at training time, so nothing is rescaled here.
// In training each unit is kept with probability 1 − ratio, from a mask seeded by the layer's seed
// and drawn afresh every forward, and kept units are scaled by 1 / (1 − ratio). The mask of the
// n-th training forward is dropout_mask.h's for (seed, n), which the CUDA kernel draws too.
class DropoutLayer final : public UnaryLayer {
 public:
  static const LayerSchema& schema();
  explicit DropoutLayer(const LayerSpec& spec);
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  float ratio() const { return ratio_; }
  bool backward_in_place() const override { return true; }
  bool in_place_while_training() const override { return true; }  // backward reads the mask only
  bool backward_reads_outputs() const override { return false; }

 private:
  float ratio_;
  // The mask of the last training forward, which backward applies again; forward is const but
  // drawing a mask is what it must do in training.
  mutable std::vector<std::uint8_t> mask_;
  mutable std::uint64_t draws_ = 0;
};

}  // namespace espresso
