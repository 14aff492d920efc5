#include "layers/activation.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace espresso {
namespace {

// Each function's name and the defaults of the parameters it reads.
struct Named {
  const char* name;
  ActivationLayer::Function function;
  double alpha;
  double beta;
  double gamma;
};

constexpr double kSeluAlpha = 1.67326319217681884765625, kSeluGamma = 1.05070102214813232421875;

constexpr Named kFunctions[] = {
    {"clip", ActivationLayer::Function::clip, 0, 0, 0},
    {"hard_sigmoid", ActivationLayer::Function::hard_sigmoid, 0.2, 0.5, 0},
    {"hard_swish", ActivationLayer::Function::hard_swish, 0, 0, 0},
    {"elu", ActivationLayer::Function::elu, 1.0, 0, 0},
    {"selu", ActivationLayer::Function::selu, kSeluAlpha, 0, kSeluGamma},
    {"softplus", ActivationLayer::Function::softplus, 0, 0, 0},
    {"softsign", ActivationLayer::Function::softsign, 0, 0, 0},
    {"sigmoid", ActivationLayer::Function::sigmoid, 0, 0, 0},
    {"tanh", ActivationLayer::Function::tanh, 0, 0, 0},
    {"power", ActivationLayer::Function::power, 1, 0, 1},
    {"exp", ActivationLayer::Function::exp, 0, 0, 0},
    {"log", ActivationLayer::Function::log, 0, 0, 0},
    {"sqrt", ActivationLayer::Function::sqrt, 0, 0, 0},
    {"neg", ActivationLayer::Function::neg, 0, 0, 0},
    {"reciprocal", ActivationLayer::Function::reciprocal, 0, 0, 0},
    {"floor", ActivationLayer::Function::floor, 0, 0, 0},
    {"ceil", ActivationLayer::Function::ceil, 0, 0, 0},
    {"abs", ActivationLayer::Function::abs, 0, 0, 0},
    {"float16", ActivationLayer::Function::float16, 0, 0, 0},
};

}  // namespace

// float16 keeps 11 significant bits down to 2^-14, then steps of 2^-24 (subnormals); its largest
// finite value is 65504 and anything that rounds past it becomes infinite.
float round_to_float16(float v) {
  if (!std::isfinite(v) || v == 0) return v;
  int exponent = 0;
  std::frexp(v, &exponent);  // |v| = m · 2^exponent with m in [0.5, 1)
  const double step = std::ldexp(1.0, std::max(exponent - 11, -24));
  const double rounded = std::nearbyint(static_cast<double>(v) / step) * step;  // ties to even
  if (std::abs(rounded) > 65504.0) return std::copysign(std::numeric_limits<float>::infinity(), v);
  return static_cast<float>(rounded);
}

const LayerSchema& ActivationLayer::schema() {
  static const LayerSchema schema = [] {
    std::vector<std::string_view> names;
    for (const Named& f : kFunctions) names.emplace_back(f.name);
    const double inf = std::numeric_limits<double>::infinity();
    return LayerSchema{
        .attributes = {{.name = "function", .type = AttrType::text, .required = true, .choices = names},
                       {.name = "alpha",
                        .type = AttrType::number,
                        .default_text = "hard_sigmoid 0.2, elu 1, selu 1.67326, power 1"},
                       {.name = "beta",
                        .type = AttrType::number,
                        .default_text = "hard_sigmoid 0.5, power 0"},
                       {.name = "gamma", .type = AttrType::number, .default_text = "selu 1.0507, power 1"},
                       {.name = "min", .type = AttrType::number, .fallback = -inf},
                       {.name = "max", .type = AttrType::number, .fallback = inf}},
        .weights = "–",
        .notes =
            "element-wise (activation.h lists the functions); in place; backward: floor and ceil pass no "
            "gradient, float16 passes it unchanged",
    };
  }();
  return schema;
}

ActivationLayer::ActivationLayer(const LayerSpec& spec) : Layer(spec) {
  const std::string name = spec.attrs.require_string("function");
  // The schema admits only the table's names.
  const Named& f = *std::find_if(std::begin(kFunctions), std::end(kFunctions),
                                 [&](const Named& entry) { return name == entry.name; });
  function_ = f.function;
  // alpha, beta and gamma default by function, so the schema cannot fill them in.
  auto parameter = [&](const char* attr, double fallback) {
    const double value = spec.attrs.has(attr) ? spec.attrs.require_float(attr) : fallback;
    if (!std::isfinite(value)) fail_model(std::string("attribute '") + attr + "' must be finite");
    return value;
  };
  alpha_ = parameter("alpha", f.alpha);
  beta_ = parameter("beta", f.beta);
  gamma_ = parameter("gamma", f.gamma);
  min_ = spec.attrs.require_float("min");
  max_ = spec.attrs.require_float("max");
}

std::vector<Shape> ActivationLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  return {inputs[0]};
}

float ActivationLayer::apply(float v) const {
  const auto alpha = static_cast<float>(alpha_), beta = static_cast<float>(beta_),
             gamma = static_cast<float>(gamma_), lo = static_cast<float>(min_), hi = static_cast<float>(max_);
  switch (function_) {
    case Function::clip:
      return std::min(std::max(v, lo), hi);
    case Function::hard_sigmoid:
      return std::max(0.0f, std::min(1.0f, alpha * v + beta));
    case Function::hard_swish:
      return v * std::max(0.0f, std::min(1.0f, v / 6.0f + 0.5f));
    case Function::elu:
      return v > 0 ? v : alpha * std::expm1(v);
    case Function::selu:
      return gamma * (v > 0 ? v : alpha * std::expm1(v));
    case Function::softplus:
      return v > 20 ? v : std::log1p(std::exp(v));
    case Function::softsign:
      return v / (1 + std::abs(v));
    case Function::sigmoid:
      return sigmoid_value(v);
    case Function::tanh:
      return std::tanh(v);
    case Function::power:
      return power_value(v, alpha, beta, gamma);
    case Function::exp:
      return std::exp(v);
    case Function::log:
      return std::log(v);
    case Function::sqrt:
      return std::sqrt(v);
    case Function::neg:
      return -v;
    case Function::reciprocal:
      return 1 / v;
    case Function::floor:
      return std::floor(v);
    case Function::ceil:
      return std::ceil(v);
    case Function::abs:
      return std::abs(v);
    case Function::float16:
      return round_to_float16(v);
  }
  return 0;
}

void ActivationLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) y[i] = apply(x[i]);
}

void ActivationLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                               const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                               std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* x = inputs[0].data<float>();
  const float* y = outputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  const auto alpha = static_cast<float>(alpha_), beta = static_cast<float>(beta_),
             gamma = static_cast<float>(gamma_), lo = static_cast<float>(min_), hi = static_cast<float>(max_);
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) {
    const float v = x[i];
    float slope = 0;  // dy/dx at v
    switch (function_) {
      case Function::clip:
        slope = v >= lo && v <= hi ? 1.0f : 0.0f;
        break;
      case Function::hard_sigmoid: {
        const float t = alpha * v + beta;
        slope = t > 0 && t < 1 ? alpha : 0.0f;
        break;
      }
      case Function::hard_swish: {
        // d/dx of x · gate(x) with gate = clamp(x/6 + 1/2, 0, 1).
        const float t = v / 6.0f + 0.5f;
        const bool ramp = t > 0 && t < 1;
        slope = std::max(0.0f, std::min(1.0f, t)) + (ramp ? v / 6.0f : 0.0f);
        break;
      }
      case Function::elu:
        slope = v > 0 ? 1.0f : alpha * std::exp(v);
        break;
      case Function::selu:
        slope = gamma * (v > 0 ? 1.0f : alpha * std::exp(v));
        break;
      case Function::softplus:
        slope = v > 20 ? 1.0f : 1 / (1 + std::exp(-v));
        break;
      case Function::softsign:
        slope = 1 / ((1 + std::abs(v)) * (1 + std::abs(v)));
        break;
      case Function::sigmoid:
        slope = y[i] * (1.0f - y[i]);
        break;
      case Function::tanh:
        slope = 1.0f - y[i] * y[i];
        break;
      case Function::power:
        slope = power_slope(v, alpha, beta, gamma);
        break;
      case Function::exp:
        slope = std::exp(v);
        break;
      case Function::log:
        slope = 1 / v;
        break;
      case Function::sqrt:
        slope = 0.5f / std::sqrt(v);
        break;
      case Function::neg:
        slope = -1.0f;
        break;
      case Function::reciprocal:
        slope = -1 / (v * v);
        break;
      case Function::floor:
      case Function::ceil:
        slope = 0.0f;
        break;
      case Function::abs:
        slope = v > 0 ? 1.0f : v < 0 ? -1.0f : 0.0f;
        break;
      case Function::float16:
        slope = 1.0f;
        break;
    }
    dx[i] += dy[i] * slope;
  }
}

}  // namespace espresso
