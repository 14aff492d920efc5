// One solver step for one parameter element, shared by the CPU solver loop and the CUDA update
// kernel so that both devices apply exactly the same arithmetic.
#pragma once

#include <cmath>

#include "core/host_device.h"
#include "espresso/solver.h"

namespace espresso::train {

// Everything one update of one blob needs, resolved for the iteration: rates already include the
// policy and lr_mult, decay includes decay_mult.
struct UpdateRule {
  SolverType type = SolverType::sgd;
  float lr = 0.0f;
  float grad_scale = 1.0f;  // 1/iter_size, times the clipping factor and 1/loss scale
  float decay = 0.0f;
  bool l1 = false;
  float momentum = 0.0f;
  float momentum2 = 0.0f;   // Adam's second-moment decay
  float rms_decay = 0.0f;
  float delta = 0.0f;
  float correction = 1.0f;  // Adam's bias correction √(1−β₂ᵗ)/(1−β₁ᵗ)
};

// Updates weight w in place from gradient g with history h (and u, the second history of AdaDelta
// and Adam); returns the step applied, which Caffe leaves in the gradient buffer.
ESPRESSO_HOST_DEVICE inline float apply_update(const UpdateRule& r, float& w, float g, float& h, float& u) {
  g *= r.grad_scale;
  if (r.decay != 0.0f) g += r.l1 ? r.decay * static_cast<float>((w > 0.0f) - (w < 0.0f)) : r.decay * w;
  float step = 0.0f;
  switch (r.type) {
    case SolverType::sgd:
      h = r.lr * g + r.momentum * h;
      step = h;
      break;
    case SolverType::nesterov: {
      const float previous = h;
      h = r.momentum * h + r.lr * g;
      step = (1.0f + r.momentum) * h - r.momentum * previous;
      break;
    }
    case SolverType::adagrad:
      h += g * g;
      step = r.lr * g / (sqrtf(h) + r.delta);
      break;
    case SolverType::rmsprop:
      h = r.rms_decay * h + (1.0f - r.rms_decay) * g * g;
      step = r.lr * g / (sqrtf(h) + r.delta);
      break;
    case SolverType::adadelta: {
      // h: running mean of squared gradients; u: running mean of squared steps.
      h = r.momentum * h + (1.0f - r.momentum) * g * g;
      const float scaled = g * sqrtf((u + r.delta) / (h + r.delta));
      u = r.momentum * u + (1.0f - r.momentum) * scaled * scaled;
      step = r.lr * scaled;
      break;
    }
    case SolverType::adam:
      // h: first moment; u: second moment.
      h = r.momentum * h + (1.0f - r.momentum) * g;
      u = r.momentum2 * u + (1.0f - r.momentum2) * g * g;
      step = r.lr * r.correction * h / (sqrtf(u) + r.delta);
      break;
  }
  w -= step;
  return step;
}

}  // namespace espresso::train
