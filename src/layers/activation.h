#pragma once

#include <math.h>

#include "core/host_device.h"
#include "layers/layer.h"

namespace espresso {

// The nearest float16 value of v (ties to even, ±inf beyond float16's range) as an fp32 value.
float round_to_float16(float v);

// Element-wise functions without learned parameters, chosen by `function`:
//   clip          min(max(x, `min`), `max`)            (min -inf, max +inf)
//   hard_sigmoid  max(0, min(1, `alpha`·x + `beta`))   (alpha 0.2, beta 0.5)
//   hard_swish    x · max(0, min(1, x/6 + 1/2))
//   elu           x > 0 ? x : `alpha`·(e^x − 1)         (alpha 1)
//   selu          `gamma`·(x > 0 ? x : `alpha`·(e^x − 1)) (alpha 1.67326, gamma 1.0507)
//   softplus      ln(1 + e^x);  softsign  x / (1 + |x|)
//   sigmoid       1 / (1 + e^−x);  tanh
//   power         (`beta` + `alpha`·x)^`gamma`         (alpha 1, beta 0, gamma 1): Caffe's Power with
//                 alpha = scale, beta = shift, gamma = power
//   exp, log, sqrt, neg, reciprocal, floor, ceil, abs
//   float16       the nearest float16 value (ties to even, ±inf beyond its range), kept in fp32:
//                 ONNX casts to FLOAT16 on tensors that stay fp32 here
// Backward uses each function's derivative, taking one side at a kink: clip passes the gradient
// where min ≤ x ≤ max, hard_sigmoid where 0 < alpha·x + beta < 1, abs gives 0 at 0. sigmoid and tanh
// take their slope from the output, as Caffe does; power's slope is 0 where alpha·gamma is 0 (a constant).
// floor and ceil pass none (PyTorch's convention: their derivative is 0 wherever it exists). float16 passes
// the gradient straight through, as a cast does: rounding is a precision change, not a function to learn
// through, and its true derivative (0 between float16 values) would stop training.
class ActivationLayer final : public Layer {
 public:
  enum class Function {
    clip,
    hard_sigmoid,
    hard_swish,
    elu,
    selu,
    softplus,
    softsign,
    sigmoid,
    tanh,
    power,
    exp,
    log,
    sqrt,
    neg,
    reciprocal,
    floor,
    ceil,
    abs,
    float16
  };

  static const LayerSchema& schema();
  explicit ActivationLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  bool in_place() const override { return true; }
  // The function at one element: the reference forward and the fast CPU kernels share it.
  float apply(float v) const;
  Function function() const { return function_; }
  double alpha() const { return alpha_; }
  double beta() const { return beta_; }
  double gamma() const { return gamma_; }
  double min() const { return min_; }
  double max() const { return max_; }

 private:
  Function function_;
  double alpha_, beta_, gamma_, min_, max_;
};

// Formulas the reference, the fast CPU kernel and the CUDA kernel share (C functions: both devices have
// them).
ESPRESSO_HOST_DEVICE inline float sigmoid_value(float v) { return 1.0f / (1.0f + expf(-v)); }

// Caffe's Power, with the common exponents computed without powf: exact for 1 and 2, and faster.
ESPRESSO_HOST_DEVICE inline float power_value(float v, float alpha, float beta, float gamma) {
  const float t = beta + alpha * v;
  if (gamma == 1.0f) return t;
  if (gamma == 2.0f) return t * t;
  if (gamma == 0.5f) return sqrtf(t);
  return powf(t, gamma);
}

ESPRESSO_HOST_DEVICE inline float power_slope(float v, float alpha, float beta, float gamma) {
  // alpha·gamma = 0 makes the output constant; powf(t, gamma − 1) could be infinite there.
  if (alpha * gamma == 0.0f) return 0.0f;
  if (gamma == 1.0f) return alpha;
  const float t = beta + alpha * v;
  if (gamma == 2.0f) return 2.0f * alpha * t;
  return gamma * alpha * powf(t, gamma - 1.0f);
}

}  // namespace espresso
