#include "layers/accuracy.h"

namespace espresso {

const LayerSchema& AccuracyLayer::schema() {
  static const LayerSchema schema = [] {
    LayerSchema s{
        .attributes = {{.name = "top_k", .type = AttrType::integer, .fallback = std::int64_t{1}, .min = 1}},
        .weights = "–",
        .notes = "inputs: scores, labels; output: scalar; ties count for the label",
    };
    const std::vector<AttrSpec> labeled = LabeledLayer::attributes();
    s.attributes.insert(s.attributes.end(), labeled.begin(), labeled.end());
    return s;
  }();
  return schema;
}

AccuracyLayer::AccuracyLayer(const LayerSpec& spec)
    : LabeledLayer(spec), top_k_(spec.attrs.require_int("top_k")) {}

std::vector<Shape> AccuracyLayer::output_shapes(const std::vector<Shape>& inputs) const {
  const AxisSplit s = split(inputs);
  if (top_k_ > s.channels) {
    fail_shape("attribute 'top_k' is " + std::to_string(top_k_) + " but the scores have only " +
               std::to_string(s.channels) + " classes");
  }
  return {Shape{}};
}

void AccuracyLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const auto [outer, classes, inner] = split(shapes_of(inputs));
  const float* scores = inputs[0].data<float>();
  const float* labels = inputs[1].data<float>();
  std::int64_t counted = 0, correct = 0;
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t i = 0; i < inner; ++i) {
      const std::optional<std::int64_t> label = label_at(labels, o * inner + i, classes);
      if (!label) continue;
      const float* row = scores + o * classes * inner + i;
      const float truth = row[*label * inner];
      std::int64_t better = 0;
      for (std::int64_t c = 0; c < classes; ++c) better += row[c * inner] > truth ? 1 : 0;
      ++counted;
      correct += better < top_k_ ? 1 : 0;
    }
  }
  outputs[0].data<float>()[0] =
      counted == 0 ? 0.0f : static_cast<float>(correct) / static_cast<float>(counted);
}

}  // namespace espresso
