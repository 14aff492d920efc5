// Solvers: Caffe's update rules, learning-rate policies, weight decay and gradient clipping, applied
// to a net's parameters after backward().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "espresso/net.h"
#include "espresso/tensor.h"

namespace espresso {
class Stream;
}

namespace espresso::train {

struct UpdateRule;

enum class SolverType { sgd, nesterov, adagrad, rmsprop, adadelta, adam };

enum class Regularization { l2, l1 };

// Caffe's names ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"); throws ModelError
// listing the known names otherwise.
SolverType parse_solver_type(const std::string& name);
const char* solver_type_name(SolverType type);

struct SolverConfig {
  SolverType type = SolverType::sgd;
  double base_lr = 0.01;
  // fixed, step, exp, inv, multistep, poly, sigmoid (Caffe) or cosine (espresso).
  std::string lr_policy = "fixed";
  double gamma = 0.0;
  double power = 0.0;
  std::int64_t stepsize = 0;
  std::vector<std::int64_t> stepvalue;
  std::int64_t max_iter = 0;
  double momentum = 0.0;
  double momentum2 = 0.999;  // Adam's second-moment decay
  double delta = 1e-8;
  double rms_decay = 0.99;
  double weight_decay = 0.0;
  Regularization regularization = Regularization::l2;
  double clip_gradients = -1.0;  // negative: no clipping
  int iter_size = 1;
};

// The learning rate at `iter` (0-based). Throws ModelError naming the policy when it is unknown or its
// settings are missing (stepsize for step, max_iter for poly and cosine).
double learning_rate(const SolverConfig& config, std::int64_t iter);

// Applies one update to the parameters: data -= update(grad). The gradients are consumed (on return
// they hold the applied step, as in Caffe). Parameters are f32 tensors, all on the CPU or all on one
// GPU, where the update runs on the device and its history stays there.
class Solver {
 public:
  explicit Solver(SolverConfig config);
  ~Solver();
  Solver(Solver&&) noexcept;
  Solver& operator=(Solver&&) noexcept;

  const SolverConfig& config() const { return config_; }
  // One update at iteration `iter` (0-based). The first call sizes the history to `params`; later
  // calls must pass the same parameters in the same order. `loss_scale`: the gradients are the loss's
  // times it (Net::set_loss_scale, mixed precision training); the step divides it out. The parameters'
  // tensors must not overlap: a device may update them all at once.
  void update(std::vector<Parameter>& params, std::int64_t iter, float loss_scale = 1.0f);

  // The per-parameter state, Caffe's layout: one blob per parameter, AdaDelta and Adam a second set
  // after the first. Empty until the first update or set_history().
  const std::vector<Tensor>& history() const { return history_; }
  // Restores state saved from history() (on any device); throws ModelError naming the blob whose count
  // or shape does not match `params`.
  void set_history(const std::vector<Parameter>& params, std::vector<Tensor> history);
  // How many history blobs this solver type keeps per parameter.
  int history_sets() const;

 private:
  void check_parameters(const std::vector<Parameter>& params);
  void ensure_history(const std::vector<Parameter>& params);
  // The factor that scales the gradients to clip_gradients in global L2 norm (1 without clipping), for
  // gradients `loss_scale` times the loss's.
  float clip_factor(const std::vector<Parameter>& params, float loss_scale);
  // `factor`: what the gradients are multiplied by before the step (clipping, loss scale).
  UpdateRule rule_for(const Parameter& param, double rate, std::int64_t iter, float factor) const;

  SolverConfig config_;
  std::vector<Tensor> history_;
  Device device_ = Device::cpu();
  std::unique_ptr<Stream> stream_;  // the update's queue on the parameters' device
};

// Dynamic loss scaling for fp16 training (Net::set_loss_scale), as in mixed precision practice: the
// scale starts high, halves whenever a step's gradients overflow (that step's update is skipped) and
// doubles after `growth_interval` steps in a row without overflow, so it hovers just below the largest
// scale fp16 can hold.
struct LossScaleConfig {
  float initial = 65536.0f;
  std::int64_t growth_interval = 2000;
  // Below this the scale has collapsed: gradients overflow even barely scaled, which scaling cannot
  // mend (a diverging net, or values beyond fp16's range).
  float minimum = 1.0f;
};

class LossScaler {
 public:
  explicit LossScaler(LossScaleConfig config = {});
  float scale() const { return scale_; }
  // After the backward of iteration `iter`: `overflowed_layer` is the layer whose gradient overflowed
  // (Net::non_finite_gradient), empty when none did. Returns whether the step's update is to be applied,
  // and moves the scale. Throws Error naming the iteration and the layer when the scale collapses.
  bool update(const std::string& overflowed_layer, std::int64_t iter);
  // Overflows in a row so far.
  std::int64_t overflows() const { return overflows_; }
  // Steps without overflow since the scale last changed (a snapshot keeps them with the scale).
  std::int64_t clean_steps() const { return clean_steps_; }
  // Goes on from a snapshot's scale and clean steps (at most growth_interval − 1 of them count); throws
  // UnsupportedError for a scale that is not finite or is below the minimum, or negative clean steps.
  void resume(float scale, std::int64_t clean_steps);

 private:
  LossScaleConfig config_;
  float scale_;
  std::int64_t clean_steps_ = 0;
  std::int64_t overflows_ = 0;
};

}  // namespace espresso::train
