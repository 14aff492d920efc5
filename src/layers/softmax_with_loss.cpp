#include "layers/softmax_with_loss.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "layers/softmax.h"

namespace espresso {

namespace {

// LossNormalization's names, in its order.
constexpr std::string_view kNormalizations[] = {"valid", "batch_size", "full", "none"};

}  // namespace

AttrSpec loss_normalization_attribute(LossNormalization fallback) {
  return {.name = "normalization",
          .type = AttrType::text,
          .fallback = std::string(kNormalizations[static_cast<int>(fallback)]),
          .choices = std::vector<std::string_view>(std::begin(kNormalizations), std::end(kNormalizations))};
}

LossNormalization loss_normalization(const Attributes& attrs) {
  const std::string name = attrs.require_string("normalization");
  return static_cast<LossNormalization>(
      std::find(std::begin(kNormalizations), std::end(kNormalizations), name) - std::begin(kNormalizations));
}

const LayerSchema& SoftmaxWithLossLayer::schema() {
  static const LayerSchema schema = [] {
    LayerSchema s{
        .attributes = LabeledLayer::attributes(),
        .weights = "–",
        .notes = "inputs: scores, labels; outputs: scalar loss, optionally the probabilities (Caffe's second top)",
    };
    s.attributes.push_back(loss_normalization_attribute(LossNormalization::valid));
    return s;
  }();
  return schema;
}

SoftmaxWithLossLayer::SoftmaxWithLossLayer(const LayerSpec& spec)
    : LabeledLayer(spec), normalization_(loss_normalization(spec.attrs)) {
  if (spec.outputs.size() > 2) fail_model("has at most two outputs (loss, probabilities)");
}

std::vector<Shape> SoftmaxWithLossLayer::output_shapes(const std::vector<Shape>& inputs) const {
  split(inputs);
  if (spec().outputs.size() == 2) return {Shape{}, inputs[0]};
  return {Shape{}};
}

void SoftmaxWithLossLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const AxisSplit s = split(shapes_of(inputs));
  std::vector<float> probabilities;
  float* prob = nullptr;
  if (outputs.size() == 2) {
    prob = outputs[1].data<float>();
  } else {
    probabilities.resize(static_cast<std::size_t>(inputs[0].numel()));
    prob = probabilities.data();
  }
  softmax_reference(inputs[0].data<float>(), prob, s);
  const float* labels = inputs[1].data<float>();
  double loss = 0;
  std::int64_t valid = 0;
  for (std::int64_t o = 0; o < s.outer; ++o) {
    for (std::int64_t i = 0; i < s.inner; ++i) {
      const std::optional<std::int64_t> label = label_at(labels, o * s.inner + i, s.channels);
      if (!label) continue;
      loss -= std::log(std::max(prob[(o * s.channels + *label) * s.inner + i], FLT_MIN));
      ++valid;
    }
  }
  outputs[0].data<float>()[0] = static_cast<float>(loss / normalizer(s, valid));
}

double SoftmaxWithLossLayer::normalizer(const AxisSplit& split, std::int64_t valid) const {
  return loss_normalizer(normalization_, valid, split.outer, split.outer * split.inner);
}

void SoftmaxWithLossLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                                    const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                                    std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const AxisSplit s = split(shapes_of(inputs));
  std::vector<float> recomputed;
  const float* prob = nullptr;
  if (outputs.size() == 2) {
    prob = outputs[1].data<float>();
  } else {
    recomputed.resize(static_cast<std::size_t>(inputs[0].numel()));
    softmax_reference(inputs[0].data<float>(), recomputed.data(), s);
    prob = recomputed.data();
  }
  const float* labels = inputs[1].data<float>();
  float* dx = input_grads[0].data<float>();
  std::int64_t valid = 0;
  for (std::int64_t p = 0; p < s.outer * s.inner; ++p) valid += label_at(labels, p, s.channels) ? 1 : 0;
  const auto scale = static_cast<float>(output_grads[0].data<float>()[0] / normalizer(s, valid));
  // d(−log p_label)/dx_c = p_c − [c = label]; ignored positions contribute nothing.
  for (std::int64_t o = 0; o < s.outer; ++o) {
    for (std::int64_t i = 0; i < s.inner; ++i) {
      const std::optional<std::int64_t> label = label_at(labels, o * s.inner + i, s.channels);
      if (!label) continue;
      for (std::int64_t c = 0; c < s.channels; ++c) {
        const std::int64_t at = (o * s.channels + c) * s.inner + i;
        dx[at] += scale * (prob[at] - (c == *label ? 1.0f : 0.0f));
      }
    }
  }
  // Caffe ignores a gradient on the probabilities; it is exact to pass it through the softmax.
  if (outputs.size() == 2) softmax_backward_reference(prob, output_grads[1].data<float>(), dx, s);
}

}  // namespace espresso
