#pragma once

#include "layers/labeled.h"

namespace espresso {

// Knowledge distillation (Hinton, Vinyals and Dean, 2015): the student's scores learn the teacher's
// softened class distribution. With p = softmax(teacher / T) and q = softmax(student / T) along `axis`,
//   loss = alpha · T² · mean over positions of KL(p ‖ q) + (1 − alpha) · mean over labels of −log
//   softmax(student)[label]
// The T² keeps the soft term's gradients at the scale of the hard term's as T changes. Inputs: student
// scores, teacher scores of the same shape, and (when alpha < 1) the labels as SoftmaxWithLoss takes them.
class DistillationLossLayer final : public LabeledLayer {
 public:
  static const LayerSchema& schema();
  explicit DistillationLossLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  // Both scores take gradients (the teacher's is exact, for checking; a frozen teacher ignores it).
  bool differentiable_input(std::size_t input) const override { return input < 2; }
  bool backward_reads_outputs() const override { return false; }
  float default_loss_weight(int output) const override { return output == 0 ? 1.0f : 0.0f; }

 private:
  // The scores as outer x classes x inner; throws ShapeError naming the layer when the teacher's scores
  // or the labels do not fit the student's.
  AxisSplit check(const std::vector<Shape>& inputs) const;

  std::int64_t axis_;
  double temperature_;
  double alpha_;
};

}  // namespace espresso
