#include "layers/eltwise.h"

#include <algorithm>

namespace espresso {

EltwiseLayer::EltwiseLayer(const LayerSpec& spec)
    : Layer(spec), operation_(EltwiseOperation::sum), coeffs_(spec.attrs.get_floats("coeffs", {})) {
  const std::string operation = spec.attrs.get_string("operation", "sum");
  if (operation == "prod") {
    operation_ = EltwiseOperation::prod;
  } else if (operation == "max") {
    operation_ = EltwiseOperation::max;
  } else if (operation != "sum") {
    fail_model("attribute 'operation' must be \"sum\", \"prod\" or \"max\", got \"" + operation + "\"");
  }
  if (!coeffs_.empty() && operation_ != EltwiseOperation::sum) {
    fail_model("attribute 'coeffs' applies only to the \"sum\" operation");
  }
  if (!coeffs_.empty() && coeffs_.size() != spec.inputs.size()) {
    fail_model("attribute 'coeffs' has " + std::to_string(coeffs_.size()) + " values for " +
               std::to_string(spec.inputs.size()) + " inputs");
  }
}

std::vector<Shape> EltwiseLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, SIZE_MAX);
  for (std::size_t i = 1; i < inputs.size(); ++i) {
    if (inputs[i] != inputs[0]) {
      fail_shape("input " + std::to_string(i) + " has shape " + inputs[i].str() + ", input 0 has " +
                 inputs[0].str() + "; all inputs must have one shape");
    }
  }
  return {inputs[0]};
}

std::vector<float> EltwiseLayer::coefficients(std::size_t input_count) const {
  if (coeffs_.empty()) return std::vector<float>(input_count, 1.0f);
  return std::vector<float>(coeffs_.begin(), coeffs_.end());
}

void EltwiseLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const std::vector<float> coeffs = coefficients(inputs.size());
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = outputs[0].numel(); i < n; ++i) {
    float value = inputs[0].data<float>()[i];
    if (operation_ == EltwiseOperation::sum) value *= coeffs[0];
    for (std::size_t k = 1; k < inputs.size(); ++k) {
      const float x = inputs[k].data<float>()[i];
      switch (operation_) {
        case EltwiseOperation::sum:
          value += coeffs[k] * x;
          break;
        case EltwiseOperation::prod:
          value *= x;
          break;
        case EltwiseOperation::max:
          value = std::max(value, x);
          break;
      }
    }
    y[i] = value;
  }
}

void EltwiseLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                            const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                            std::vector<Tensor>&) const {
  const std::vector<float> coeffs = coefficients(inputs.size());
  const float* dy = output_grads[0].data<float>();
  for (std::int64_t i = 0, n = outputs[0].numel(); i < n; ++i) {
    // The first maximum, the one the forward keeps.
    std::size_t best = 0;
    if (operation_ == EltwiseOperation::max) {
      for (std::size_t k = 1; k < inputs.size(); ++k) {
        if (inputs[k].data<float>()[i] > inputs[best].data<float>()[i]) best = k;
      }
    }
    for (std::size_t k = 0; k < inputs.size(); ++k) {
      if (!input_grads[k].defined()) continue;
      float grad = 0.0f;
      switch (operation_) {
        case EltwiseOperation::sum:
          grad = coeffs[k] * dy[i];
          break;
        case EltwiseOperation::prod:
          // The product of the other inputs, not y / x_k, which fails at x_k = 0.
          grad = dy[i];
          for (std::size_t j = 0; j < inputs.size(); ++j) {
            if (j != k) grad *= inputs[j].data<float>()[i];
          }
          break;
        case EltwiseOperation::max:
          grad = k == best ? dy[i] : 0.0f;
          break;
      }
      input_grads[k].data<float>()[i] += grad;
    }
  }
}

}  // namespace espresso
