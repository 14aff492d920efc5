#pragma once

#include <cmath>
#include <functional>
#include <string>

#include "core/host_device.h"
#include "layers/layer.h"

namespace espresso {

// Element-wise a (op) b with numpy broadcasting: shapes are aligned at their last axes and a
// dimension of 1 stretches. `operation`: add, sub, mul, div, max, min, pow.
class BinaryLayer final : public Layer {
 public:
  enum class Op { add, sub, mul, div, max, min, pow };

  static const LayerSchema& schema();
  explicit BinaryLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  // Safe: when the output has input 0's size, input 0 is not broadcast and is read before written.
  bool in_place() const override { return true; }
  // Its partials come from the operands (or are constants): an in-place ReLU may overwrite the output.
  bool backward_reads_outputs() const override { return false; }
  Op op() const { return op_; }

 private:
  Op op_;
};

// Caffe's Eltwise of two or more inputs as a chain of Binary layers, left to right as Caffe computes it:
// `operation` "sum" is c0·x0 + c1·x1 + ... (a coefficient of `coeffs`, empty for all 1, other than 1
// multiplies by a scalar Constant), "prod" x0·x1·..., "max" max(max(x0, x1), ...), whose ties keep the
// earlier input and give it the gradient, as Caffe's. The last layer keeps `eltwise`'s name, outputs and
// other attributes; `fresh(base)` names the others, layer and output alike. Throws ModelError naming the
// layer for fewer than two inputs or misfitting coefficients. The Caffe importer and the .esp reader (old
// packages held Eltwise layers) share it.
std::vector<LayerSpec> eltwise_as_binary(LayerSpec eltwise, const std::string& operation,
                                         const std::vector<double>& coeffs,
                                         const std::function<std::string(const std::string&)>& fresh);

// The numpy broadcast of two shapes; throws ShapeError when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b);

// One element of a (op) b, shared by the CPU reference and the CUDA kernel. max and min return a on ties,
// as std::max and std::min do.
ESPRESSO_HOST_DEVICE inline float binary_value(BinaryLayer::Op op, float a, float b) {
  switch (op) {
    case BinaryLayer::Op::add:
      return a + b;
    case BinaryLayer::Op::sub:
      return a - b;
    case BinaryLayer::Op::mul:
      return a * b;
    case BinaryLayer::Op::div:
      return a / b;
    case BinaryLayer::Op::max:
      return a < b ? b : a;
    case BinaryLayer::Op::min:
      return b < a ? b : a;
    case BinaryLayer::Op::pow:
      return powf(a, b);
  }
  return 0.0f;
}

struct BinaryPartials {
  float a, b;
};

// ∂(a op b)/∂a and ∂(a op b)/∂b. Ties of max and min go to a, the operand returned; the exponent's partial is
// only defined for a positive base, and 0 elsewhere.
ESPRESSO_HOST_DEVICE inline BinaryPartials binary_partials(BinaryLayer::Op op, float a, float b) {
  switch (op) {
    case BinaryLayer::Op::add:
      return {1.0f, 1.0f};
    case BinaryLayer::Op::sub:
      return {1.0f, -1.0f};
    case BinaryLayer::Op::mul:
      return {b, a};
    case BinaryLayer::Op::div:
      return {1.0f / b, -a / (b * b)};
    case BinaryLayer::Op::max:
      return a < b ? BinaryPartials{0.0f, 1.0f} : BinaryPartials{1.0f, 0.0f};
    case BinaryLayer::Op::min:
      return b < a ? BinaryPartials{0.0f, 1.0f} : BinaryPartials{1.0f, 0.0f};
    case BinaryLayer::Op::pow:
      return {b * powf(a, b - 1.0f), a > 0.0f ? powf(a, b) * logf(a) : 0.0f};
  }
  return {0.0f, 0.0f};
}

}  // namespace espresso
