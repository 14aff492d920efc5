#include "layers/distillation_loss.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

namespace espresso {

namespace {

// softmax(scores / temperature) along the split's channels, in double for the logarithms after.
std::vector<double> softened(const float* scores, const AxisSplit& s, double temperature) {
  std::vector<double> p(static_cast<std::size_t>(s.outer * s.channels * s.inner));
  for (std::int64_t o = 0; o < s.outer; ++o) {
    for (std::int64_t i = 0; i < s.inner; ++i) {
      const auto at = [&](std::int64_t c) {
        return static_cast<std::size_t>((o * s.channels + c) * s.inner + i);
      };
      double top = -INFINITY;
      for (std::int64_t c = 0; c < s.channels; ++c) top = std::max(top, scores[at(c)] / temperature);
      double sum = 0;
      for (std::int64_t c = 0; c < s.channels; ++c)
        sum += p[at(c)] = std::exp(scores[at(c)] / temperature - top);
      for (std::int64_t c = 0; c < s.channels; ++c) p[at(c)] /= sum;
    }
  }
  return p;
}

// log p, kept finite where p underflowed to 0 (such terms carry weight p = 0 in the KL sum).
double safe_log(double p) { return std::log(std::max(p, DBL_MIN)); }

}  // namespace

const LayerSchema& DistillationLossLayer::schema() {
  static const LayerSchema schema = [] {
    LayerSchema s{
        .attributes = LabeledLayer::attributes(),
        .weights = "–",
        .notes =
            "inputs: student scores, teacher scores (same shape), labels (needed when alpha < 1); output: "
            "alpha·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) averaged over positions + "
            "(1 − alpha)·cross-entropy with the labels averaged over non-ignored labels",
    };
    s.attributes.push_back({.name = "temperature", .type = AttrType::number, .fallback = 1.0, .min = 1e-3});
    s.attributes.push_back(
        {.name = "alpha", .type = AttrType::number, .fallback = 1.0, .min = 0.0, .max = 1.0});
    return s;
  }();
  return schema;
}

DistillationLossLayer::DistillationLossLayer(const LayerSpec& spec)
    : LabeledLayer(spec),
      axis_(spec.attrs.require_int("axis")),
      temperature_(spec.attrs.require_float("temperature")),
      alpha_(spec.attrs.require_float("alpha")) {
  if (spec.outputs.size() != 1) fail_model("has one output (the loss)");
  if (alpha_ < 1.0 && spec.inputs.size() == 2)
    fail_model("alpha " + std::to_string(alpha_) +
               " gives the hard-label term a weight of 1 - alpha, which needs the labels as a third input");
}

AxisSplit DistillationLossLayer::check(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, 3);
  const Shape& student = inputs[0];
  if (inputs[1] != student) {
    fail_shape("the teacher's scores have shape " + inputs[1].str() + " but the student's " + student.str() +
               " (input 1 must match input 0: same batch and classes)");
  }
  if (inputs.size() == 3) return split({student, inputs[2]});
  const std::optional<int> axis = resolve_axis(axis_, student.rank());
  if (!axis)
    fail_shape("axis " + std::to_string(axis_) + " is out of range for scores of shape " + student.str());
  return split_at(student, *axis, *axis + 1);
}

std::vector<Shape> DistillationLossLayer::output_shapes(const std::vector<Shape>& inputs) const {
  check(inputs);
  return {Shape{}};
}

void DistillationLossLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const AxisSplit s = check(shapes_of(inputs));
  const std::int64_t positions = s.outer * s.inner;
  double soft = 0;
  if (alpha_ > 0) {
    const std::vector<double> p = softened(inputs[1].data<float>(), s, temperature_);
    const std::vector<double> q = softened(inputs[0].data<float>(), s, temperature_);
    for (std::size_t k = 0; k < p.size(); ++k) {
      if (p[k] > 0) soft += p[k] * (safe_log(p[k]) - safe_log(q[k]));
    }
    soft *= temperature_ * temperature_ / static_cast<double>(std::max<std::int64_t>(positions, 1));
  }
  double hard = 0;
  if (alpha_ < 1) {
    const std::vector<double> prob = softened(inputs[0].data<float>(), s, 1.0);
    const float* labels = inputs[2].data<float>();
    std::int64_t valid = 0;
    for (std::int64_t o = 0; o < s.outer; ++o) {
      for (std::int64_t i = 0; i < s.inner; ++i) {
        const std::optional<std::int64_t> label = label_at(labels, o * s.inner + i, s.channels);
        if (!label) continue;
        hard -= safe_log(prob[static_cast<std::size_t>((o * s.channels + *label) * s.inner + i)]);
        ++valid;
      }
    }
    hard /= static_cast<double>(std::max<std::int64_t>(valid, 1));
  }
  outputs[0].data<float>()[0] = static_cast<float>(alpha_ * soft + (1 - alpha_) * hard);
}

void DistillationLossLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                                     const std::vector<Tensor>& output_grads,
                                     std::vector<Tensor>& input_grads, std::vector<Tensor>&) const {
  const AxisSplit s = check(shapes_of(inputs));
  const double g = output_grads[0].data<float>()[0];
  const double T = temperature_;
  const double per_position = 1.0 / static_cast<double>(std::max<std::int64_t>(s.outer * s.inner, 1));
  const std::vector<double> p = softened(inputs[1].data<float>(), s, T);
  const std::vector<double> q = softened(inputs[0].data<float>(), s, T);
  const auto at = [&](std::int64_t o, std::int64_t c, std::int64_t i) {
    return static_cast<std::size_t>((o * s.channels + c) * s.inner + i);
  };
  // Student: d(T² KL)/ds_c = T (q_c − p_c).
  if (input_grads[0].defined() && alpha_ > 0) {
    float* ds = input_grads[0].data<float>();
    const double scale = g * alpha_ * T * per_position;
    for (std::size_t k = 0; k < p.size(); ++k) ds[k] += static_cast<float>(scale * (q[k] - p[k]));
  }
  // Teacher: with a_c = log p_c − log q_c, d(T² KL)/dt_c = T p_c (a_c − Σ_k p_k a_k).
  if (input_grads[1].defined() && alpha_ > 0) {
    float* dt = input_grads[1].data<float>();
    const double scale = g * alpha_ * T * per_position;
    for (std::int64_t o = 0; o < s.outer; ++o) {
      for (std::int64_t i = 0; i < s.inner; ++i) {
        double kl = 0;
        for (std::int64_t c = 0; c < s.channels; ++c) {
          const std::size_t k = at(o, c, i);
          kl += p[k] * (safe_log(p[k]) - safe_log(q[k]));
        }
        for (std::int64_t c = 0; c < s.channels; ++c) {
          const std::size_t k = at(o, c, i);
          dt[k] += static_cast<float>(scale * p[k] * (safe_log(p[k]) - safe_log(q[k]) - kl));
        }
      }
    }
  }
  // Hard labels: d(−log softmax(s)_label)/ds_c = softmax(s)_c − [c = label], averaged over valid labels.
  if (input_grads[0].defined() && alpha_ < 1) {
    const std::vector<double> prob = softened(inputs[0].data<float>(), s, 1.0);
    const float* labels = inputs[2].data<float>();
    float* ds = input_grads[0].data<float>();
    std::int64_t valid = 0;
    for (std::int64_t k = 0; k < s.outer * s.inner; ++k) valid += label_at(labels, k, s.channels) ? 1 : 0;
    const double scale = g * (1 - alpha_) / static_cast<double>(std::max<std::int64_t>(valid, 1));
    for (std::int64_t o = 0; o < s.outer; ++o) {
      for (std::int64_t i = 0; i < s.inner; ++i) {
        const std::optional<std::int64_t> label = label_at(labels, o * s.inner + i, s.channels);
        if (!label) continue;
        for (std::int64_t c = 0; c < s.channels; ++c) {
          const std::size_t k = at(o, c, i);
          ds[k] += static_cast<float>(scale * (prob[k] - (c == *label ? 1.0 : 0.0)));
        }
      }
    }
  }
}

}  // namespace espresso
