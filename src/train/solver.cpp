#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <utility>

#include "backends/registry.h"
#include "core/device_memory.h"
#include "espresso/errors.h"
#include "import/caffe/caffe.pb.h"
#include "train/solver_config.h"

namespace espresso::train {
namespace {

struct TypeName {
  SolverType type;
  const char* name;
};
constexpr TypeName kTypeNames[] = {{SolverType::sgd, "SGD"},           {SolverType::nesterov, "Nesterov"},
                                   {SolverType::adagrad, "AdaGrad"},   {SolverType::rmsprop, "RMSProp"},
                                   {SolverType::adadelta, "AdaDelta"}, {SolverType::adam, "Adam"}};

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
Solver::~Solver() = default;
Solver::Solver(Solver&&) noexcept = default;
Solver& Solver::operator=(Solver&&) noexcept = default;

int Solver::history_sets() const {
  return config_.type == SolverType::adadelta || config_.type == SolverType::adam ? 2 : 1;
}

void Solver::check_parameters(const std::vector<Parameter>& params) {
  if (params.empty()) return;
  const Device device = params.front().value.device();
  for (const Parameter& param : params) {
    if (param.value.dtype() != DType::f32 || param.grad.numel() != param.value.numel() ||
        param.value.device() != device || param.grad.device() != device) {
      throw UnsupportedError("solver: layer '" + param.layer + "' blob " + std::to_string(param.index) +
                             " is not an f32 parameter with a gradient of its size on " + device.str());
    }
  }
  if (device != device_ || !stream_) {
    if (!history_.empty()) {
      for (Tensor& h : history_) h = h.to(device);
    }
    stream_ = backend_for(device).create_stream(device, nullptr);
    device_ = device;
  }
}

namespace {

// `count` zeroed blobs, blob i shaped as parameter i mod params.size() and on its device: one block per
// device (a net's parameters are all on one), without the allocator's rounding of each.
std::vector<Tensor> zeroed_history(const std::vector<Parameter>& params, std::size_t count) {
  std::vector<std::pair<Device, std::vector<std::size_t>>> on_device;
  for (std::size_t p = 0; p < count; ++p) {
    const Device device = params[p % params.size()].value.device();
    auto it =
        std::find_if(on_device.begin(), on_device.end(), [&](const auto& d) { return d.first == device; });
    if (it == on_device.end()) it = on_device.insert(on_device.end(), {device, {}});
    it->second.push_back(p);
  }
  std::vector<Tensor> history(count);
  for (const auto& [device, members] : on_device) {
    std::vector<Shape> shapes;
    for (std::size_t p : members) shapes.push_back(params[p % params.size()].value.shape());
    std::vector<Tensor> made = packed_zeros(shapes, DType::f32, device, "the solver history");
    for (std::size_t k = 0; k < members.size(); ++k) history[members[k]] = std::move(made[k]);
  }
  return history;
}

}  // namespace

void Solver::ensure_history(const std::vector<Parameter>& params) {
  const std::size_t expected = params.size() * static_cast<std::size_t>(history_sets());
  if (history_.size() == expected) return;
  if (!history_.empty()) {
    throw ModelError("solver: the net has " + std::to_string(params.size()) +
                     " parameters but the solver history was made for " +
                     std::to_string(history_.size() / static_cast<std::size_t>(history_sets())));
  }
  history_ = zeroed_history(params, expected);
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
  }
  std::vector<Tensor> placed = zeroed_history(params, expected);
  for (std::size_t i = 0; i < history.size(); ++i)
    placed[i].copy_from(history[i].reshaped(placed[i].shape()));
  history_ = std::move(placed);
}

float Solver::clip_factor(const std::vector<Parameter>& params, float loss_scale) {
  if (config_.clip_gradients < 0) return 1.0f;
  double sumsq = 0.0;
  for (const Parameter& param : params) {
    if (param.spec.lr_mult == 0.0f) continue;
    sumsq += stream_->sum_of_squares(param.grad);
  }
  const double norm = std::sqrt(sumsq) / loss_scale;
  return norm <= config_.clip_gradients ? 1.0f : static_cast<float>(config_.clip_gradients / norm);
}

UpdateRule Solver::rule_for(const Parameter& param, double rate, std::int64_t iter, float factor) const {
  UpdateRule r;
  r.type = config_.type;
  r.lr = static_cast<float>(rate) * param.spec.lr_mult;
  r.grad_scale = factor / static_cast<float>(config_.iter_size);
  r.decay = static_cast<float>(config_.weight_decay) * param.spec.decay_mult;
  r.l1 = config_.regularization == Regularization::l1;
  r.momentum = static_cast<float>(config_.momentum);
  r.momentum2 = static_cast<float>(config_.momentum2);
  r.rms_decay = static_cast<float>(config_.rms_decay);
  r.delta = static_cast<float>(config_.delta);
  if (config_.type == SolverType::adam) {
    // Caffe counts Adam's t from 1.
    const double t = static_cast<double>(iter + 1);
    r.correction = static_cast<float>(std::sqrt(1.0 - std::pow(config_.momentum2, t)) /
                                      (1.0 - std::pow(config_.momentum, t)));
  }
  return r;
}

void Solver::update(std::vector<Parameter>& params, std::int64_t iter, float loss_scale) {
  if (!std::isfinite(loss_scale) || loss_scale <= 0.0f) {
    throw UnsupportedError("solver: the loss scale must be finite and positive, got " +
                           std::to_string(loss_scale));
  }
  check_parameters(params);
  ensure_history(params);
  const double rate = learning_rate(config_, iter);
  // Caffe's order: clip the accumulated gradients, then normalise, regularise and step each blob.
  const float factor = clip_factor(params, loss_scale) / loss_scale;
  const std::size_t second_set = history_.size() / static_cast<std::size_t>(history_sets());
  std::vector<Stream::BlobUpdate> updates;
  for (std::size_t p = 0; p < params.size(); ++p) {
    Parameter& param = params[p];
    // A zero lr_mult freezes the blob: no decay, no history, no change.
    if (param.spec.lr_mult == 0.0f) continue;
    Tensor* second = history_sets() == 2 ? &history_[p + second_set] : nullptr;
    updates.push_back({rule_for(param, rate, iter, factor), &param.value, &param.grad, &history_[p], second});
  }
  stream_->apply_updates(updates);
  // The next forward runs on the net's own stream.
  stream_->synchronize();
}

std::string format_number(double value) {
  if (std::isnan(value)) return "NaN";
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", value);
  return text;
}

LossScaler::LossScaler(LossScaleConfig config) : config_(config), scale_(config.initial) {
  if (!(config.initial >= config.minimum) || !(config.minimum > 0.0f) || !std::isfinite(config.initial) ||
      config.growth_interval < 1) {
    throw UnsupportedError(
        "loss scaling: the initial scale must be finite and at least the minimum (> 0), and "
        "the growth interval at least 1");
  }
}

void LossScaler::resume(float scale, std::int64_t clean_steps) {
  if (!std::isfinite(scale) || scale < config_.minimum || clean_steps < 0) {
    throw UnsupportedError("loss scale " + format_number(scale) + " after " + std::to_string(clean_steps) +
                           " clean steps: the scale must be finite and at least " +
                           format_number(config_.minimum) + ", the steps at least 0");
  }
  scale_ = scale;
  // A run resumed with a shorter growth interval doubles at its next clean step.
  clean_steps_ = std::min(clean_steps, config_.growth_interval - 1);
  overflows_ = 0;
}

bool LossScaler::update(const std::string& overflowed_layer, std::int64_t iter) {
  if (overflowed_layer.empty()) {
    overflows_ = 0;
    if (++clean_steps_ == config_.growth_interval) {
      clean_steps_ = 0;
      if (std::isfinite(scale_ * 2.0f)) scale_ *= 2.0f;
    }
    return true;
  }
  clean_steps_ = 0;
  ++overflows_;
  scale_ /= 2.0f;
  if (scale_ < config_.minimum) {
    throw Error(
        "Iteration " + std::to_string(iter) + ": fp16 gradients overflowed " + std::to_string(overflows_) +
        " times in a row and the loss scale collapsed below " + format_number(config_.minimum) + "; layer '" +
        overflowed_layer +
        "' is the first whose gradient is not finite. Lower base_lr, clip gradients or train in bf16");
  }
  return false;
}

}  // namespace espresso::train
