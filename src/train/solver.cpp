#include "train/solver.h"

#include <cmath>
#include <numbers>
#include <utility>

#include "espresso/errors.h"
#include "import/caffe/caffe.pb.h"

namespace espresso::train {
namespace {

struct TypeName {
  SolverType type;
  const char* name;
};
constexpr TypeName kTypeNames[] = {{SolverType::sgd, "SGD"},           {SolverType::nesterov, "Nesterov"},
                                   {SolverType::adagrad, "AdaGrad"},   {SolverType::rmsprop, "RMSProp"},
                                   {SolverType::adadelta, "AdaDelta"}, {SolverType::adam, "Adam"}};

float* values(Tensor& tensor) { return tensor.data<float>(); }

}  // namespace

SolverType parse_solver_type(const std::string& name) {
  for (const TypeName& entry : kTypeNames) {
    if (name == entry.name) return entry.type;
  }
  std::string known;
  for (const TypeName& entry : kTypeNames) known += (known.empty() ? "" : ", ") + std::string(entry.name);
  throw ModelError("solver type '" + name + "' is unknown (known: " + known + ")");
}

const char* solver_type_name(SolverType type) {
  for (const TypeName& entry : kTypeNames) {
    if (entry.type == type) return entry.name;
  }
  return "?";
}

SolverConfig solver_config(const caffe::SolverParameter& param) {
  SolverConfig config;
  if (param.has_type()) {
    config.type = parse_solver_type(param.type());
  } else {
    config.type = static_cast<SolverType>(param.solver_type());
  }
  config.base_lr = param.base_lr();
  config.lr_policy = param.has_lr_policy() ? param.lr_policy() : "fixed";
  config.gamma = param.gamma();
  config.power = param.power();
  config.stepsize = param.stepsize();
  config.stepvalue.assign(param.stepvalue().begin(), param.stepvalue().end());
  config.max_iter = param.max_iter();
  config.momentum = param.momentum();
  config.momentum2 = param.momentum2();
  config.delta = param.delta();
  config.rms_decay = param.rms_decay();
  config.weight_decay = param.weight_decay();
  if (param.regularization_type() == "L2") {
    config.regularization = Regularization::l2;
  } else if (param.regularization_type() == "L1") {
    config.regularization = Regularization::l1;
  } else {
    throw ModelError("solver: regularization_type '" + param.regularization_type() +
                     "' is unknown (known: L2, L1)");
  }
  config.clip_gradients = param.clip_gradients();
  if (param.iter_size() < 1)
    throw ModelError("solver: iter_size must be at least 1, found " + std::to_string(param.iter_size()));
  config.iter_size = param.iter_size();
  if (config.type == SolverType::rmsprop && (config.rms_decay < 0 || config.rms_decay >= 1))
    throw ModelError("solver: rms_decay must lie in [0, 1) for RMSProp");
  if (config.type == SolverType::adam && (config.momentum2 < 0 || config.momentum2 >= 1))
    throw ModelError("solver: momentum2 must lie in [0, 1) for Adam");
  // Validates the policy and its settings up front rather than at the first iteration.
  learning_rate(config, 0);
  return config;
}

double learning_rate(const SolverConfig& c, std::int64_t iter) {
  const auto need = [&](bool ok, const char* what) {
    if (!ok) throw ModelError("solver: lr_policy '" + c.lr_policy + "' needs " + what);
  };
  const double it = static_cast<double>(iter);
  const std::string& policy = c.lr_policy;
  if (policy == "fixed") return c.base_lr;
  if (policy == "step") {
    need(c.stepsize > 0, "a positive stepsize");
    return c.base_lr * std::pow(c.gamma, static_cast<double>(iter / c.stepsize));
  }
  if (policy == "exp") return c.base_lr * std::pow(c.gamma, it);
  if (policy == "inv") return c.base_lr * std::pow(1.0 + c.gamma * it, -c.power);
  if (policy == "multistep") {
    int passed = 0;
    for (std::int64_t value : c.stepvalue) passed += iter >= value ? 1 : 0;
    return c.base_lr * std::pow(c.gamma, passed);
  }
  if (policy == "poly") {
    need(c.max_iter > 0, "a positive max_iter");
    return c.base_lr * std::pow(1.0 - it / static_cast<double>(c.max_iter), c.power);
  }
  if (policy == "sigmoid")
    return c.base_lr * (1.0 / (1.0 + std::exp(-c.gamma * (it - static_cast<double>(c.stepsize)))));
  if (policy == "cosine") {
    need(c.max_iter > 0, "a positive max_iter");
    return c.base_lr * 0.5 * (1.0 + std::cos(std::numbers::pi * it / static_cast<double>(c.max_iter)));
  }
  throw ModelError("solver: lr_policy '" + policy +
                   "' is unknown (known: fixed, step, exp, inv, multistep, poly, sigmoid, cosine)");
}

Solver::Solver(SolverConfig config) : config_(std::move(config)) {}

int Solver::history_sets() const {
  return config_.type == SolverType::adadelta || config_.type == SolverType::adam ? 2 : 1;
}

void Solver::ensure_history(const std::vector<Parameter>& params) {
  const std::size_t expected = params.size() * static_cast<std::size_t>(history_sets());
  if (history_.size() == expected) return;
  if (!history_.empty()) {
    throw ModelError("solver: the net has " + std::to_string(params.size()) +
                     " parameters but the solver history was made for " +
                     std::to_string(history_.size() / static_cast<std::size_t>(history_sets())));
  }
  for (int set = 0; set < history_sets(); ++set) {
    for (const Parameter& param : params) history_.push_back(Tensor::zeros(param.value.shape()));
  }
}

void Solver::set_history(const std::vector<Parameter>& params, std::vector<Tensor> history) {
  const std::size_t expected = params.size() * static_cast<std::size_t>(history_sets());
  if (history.size() != expected) {
    throw ModelError("solver state holds " + std::to_string(history.size()) + " history blobs but the " +
                     solver_type_name(config_.type) + " solver needs " + std::to_string(expected) +
                     " for this net's " + std::to_string(params.size()) + " parameters");
  }
  for (std::size_t i = 0; i < history.size(); ++i) {
    const Parameter& param = params[i % params.size()];
    if (history[i].numel() != param.value.numel()) {
      throw ModelError("solver state history blob " + std::to_string(i) + " has shape " +
                       history[i].shape().str() + " but layer '" + param.layer + "' blob " +
                       std::to_string(param.index) + " has shape " + param.value.shape().str());
    }
    history[i] = history[i].reshaped(param.value.shape());
  }
  history_ = std::move(history);
}

void Solver::clip(std::vector<Parameter>& params) const {
  if (config_.clip_gradients < 0) return;
  double sumsq = 0.0;
  for (Parameter& param : params) {
    if (param.spec.lr_mult == 0.0f) continue;
    const float* g = values(param.grad);
    for (std::int64_t i = 0; i < param.grad.numel(); ++i) sumsq += static_cast<double>(g[i]) * g[i];
  }
  const double norm = std::sqrt(sumsq);
  if (norm <= config_.clip_gradients) return;
  const float factor = static_cast<float>(config_.clip_gradients / norm);
  for (Parameter& param : params) {
    if (param.spec.lr_mult == 0.0f) continue;
    float* g = values(param.grad);
    for (std::int64_t i = 0; i < param.grad.numel(); ++i) g[i] *= factor;
  }
}

void Solver::regularize(Parameter& param) const {
  const float decay = static_cast<float>(config_.weight_decay) * param.spec.decay_mult;
  if (decay == 0.0f) return;
  const float* w = values(param.value);
  float* g = values(param.grad);
  const std::int64_t n = param.value.numel();
  if (config_.regularization == Regularization::l2) {
    for (std::int64_t i = 0; i < n; ++i) g[i] += decay * w[i];
  } else {
    for (std::int64_t i = 0; i < n; ++i) g[i] += decay * static_cast<float>((w[i] > 0) - (w[i] < 0));
  }
}

void Solver::compute_step(Parameter& param, std::size_t index, double rate, std::int64_t iter) {
  const float lr = static_cast<float>(rate) * param.spec.lr_mult;
  const float momentum = static_cast<float>(config_.momentum);
  const float delta = static_cast<float>(config_.delta);
  const std::int64_t n = param.grad.numel();
  float* g = values(param.grad);
  float* h = values(history_[index]);
  switch (config_.type) {
    case SolverType::sgd:
      for (std::int64_t i = 0; i < n; ++i) {
        h[i] = lr * g[i] + momentum * h[i];
        g[i] = h[i];
      }
      break;
    case SolverType::nesterov:
      for (std::int64_t i = 0; i < n; ++i) {
        const float previous = h[i];
        h[i] = momentum * h[i] + lr * g[i];
        g[i] = (1.0f + momentum) * h[i] - momentum * previous;
      }
      break;
    case SolverType::adagrad:
      for (std::int64_t i = 0; i < n; ++i) {
        h[i] += g[i] * g[i];
        g[i] = lr * g[i] / (std::sqrt(h[i]) + delta);
      }
      break;
    case SolverType::rmsprop: {
      const float decay = static_cast<float>(config_.rms_decay);
      for (std::int64_t i = 0; i < n; ++i) {
        h[i] = decay * h[i] + (1.0f - decay) * g[i] * g[i];
        g[i] = lr * g[i] / (std::sqrt(h[i]) + delta);
      }
      break;
    }
    case SolverType::adadelta: {
      // h: running mean of squared gradients; u: running mean of squared steps.
      float* u = values(history_[index + history_.size() / 2]);
      for (std::int64_t i = 0; i < n; ++i) {
        h[i] = momentum * h[i] + (1.0f - momentum) * g[i] * g[i];
        const float step = g[i] * std::sqrt((u[i] + delta) / (h[i] + delta));
        u[i] = momentum * u[i] + (1.0f - momentum) * step * step;
        g[i] = lr * step;
      }
      break;
    }
    case SolverType::adam: {
      // h: first moment; v: second moment; Caffe counts t from 1.
      float* v = values(history_[index + history_.size() / 2]);
      const double beta1 = config_.momentum;
      const double beta2 = config_.momentum2;
      const double t = static_cast<double>(iter + 1);
      const float correction =
          static_cast<float>(std::sqrt(1.0 - std::pow(beta2, t)) / (1.0 - std::pow(beta1, t)));
      const float b1 = static_cast<float>(beta1);
      const float b2 = static_cast<float>(beta2);
      for (std::int64_t i = 0; i < n; ++i) {
        h[i] = b1 * h[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        g[i] = lr * correction * h[i] / (std::sqrt(v[i]) + delta);
      }
      break;
    }
  }
}

void Solver::update(std::vector<Parameter>& params, std::int64_t iter) {
  for (const Parameter& param : params) {
    if (!param.value.device().is_cpu() || param.value.dtype() != DType::f32 ||
        param.grad.numel() != param.value.numel()) {
      throw UnsupportedError("solver: layer '" + param.layer + "' blob " + std::to_string(param.index) +
                             " is not a CPU f32 parameter with a gradient of its size");
    }
  }
  ensure_history(params);
  const double rate = learning_rate(config_, iter);
  // Caffe's order: clip the accumulated gradients, then normalise, regularise and step each blob.
  clip(params);
  for (std::size_t p = 0; p < params.size(); ++p) {
    Parameter& param = params[p];
    // A zero lr_mult freezes the blob: no decay, no history, no change.
    if (param.spec.lr_mult == 0.0f) continue;
    float* g = values(param.grad);
    const std::int64_t n = param.grad.numel();
    if (config_.iter_size > 1) {
      const float inverse = 1.0f / static_cast<float>(config_.iter_size);
      for (std::int64_t i = 0; i < n; ++i) g[i] *= inverse;
    }
    regularize(param);
    compute_step(param, p, rate, iter);
    float* w = values(param.value);
    for (std::int64_t i = 0; i < n; ++i) w[i] -= g[i];
  }
}

}  // namespace espresso::train
