#include <cfloat>
#include <cmath>

#include "layers/labels_case.h"

namespace espresso::testing {

namespace {

// Softmax of values[k] / temperature over the classes of one position, straight from the definition.
Values softmax_at(const Values& values, std::int64_t o, std::int64_t i, std::int64_t classes,
                  std::int64_t inner, double temperature) {
  Values p(static_cast<std::size_t>(classes));
  double sum = 0;
  for (std::int64_t k = 0; k < classes; ++k) {
    p[static_cast<std::size_t>(k)] =
        std::exp(values[static_cast<std::size_t>((o * classes + k) * inner + i)] / temperature);
    sum += p[static_cast<std::size_t>(k)];
  }
  for (double& v : p) v /= sum;
  return p;
}

}  // namespace

TEST(Layers, DistillationLoss) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c = random_labels_case(rng, "DistillationLoss");
            // Inputs: student scores, teacher scores, labels (left out in some cases: soft targets alone).
            const Shape scores = c.input_shapes[0];
            c.input_shapes.insert(c.input_shapes.begin() + 1, scores);
            c.inputs.insert(c.inputs.begin() + 1,
                            rng.values(static_cast<std::size_t>(scores.numel()), -4.0, 4.0));
            c.spec.attrs.set("temperature", rng.coin() ? rng.uniform(0.5, 8.0) : 1.0);
            const bool labels = rng.integer(0, 3) != 0;
            if (labels) {
              c.non_differentiable_inputs = {2};
              const int pick = rng.integer(0, 3);
              c.spec.attrs.set("alpha", pick == 0 ? 0.0 : pick == 1 ? 1.0 : rng.uniform(0.0, 1.0));
            } else {
              c.input_shapes.pop_back();
              c.inputs.pop_back();
              c.non_differentiable_inputs.clear();
            }
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const Shape& s = c.input_shapes[0];
            const int axis = s.canonical_axis(static_cast<int>(c.spec.attrs.get_int("axis", 1)));
            const std::int64_t outer = product(s, 0, axis), classes = s[axis],
                               inner = product(s, axis + 1, s.rank());
            const double T = c.spec.attrs.get_float("temperature", 1.0);
            const double alpha = c.spec.attrs.get_float("alpha", 1.0);
            double kl = 0;
            for (std::int64_t o = 0; o < outer; ++o) {
              for (std::int64_t i = 0; i < inner; ++i) {
                const Values p = softmax_at(in[1], o, i, classes, inner, T);
                const Values q = softmax_at(in[0], o, i, classes, inner, T);
                for (std::size_t k = 0; k < p.size(); ++k) kl += p[k] * (std::log(p[k]) - std::log(q[k]));
              }
            }
            double loss = alpha * T * T * kl / static_cast<double>(outer * inner);
            if (in.size() == 3) {
              double cross_entropy = 0, valid = 0;
              for_each_label(c, in[2], [&](std::int64_t o, std::int64_t i, std::int64_t label) {
                const Values prob = softmax_at(in[0], o, i, classes, inner, 1.0);
                cross_entropy -= std::log(std::max(prob[static_cast<std::size_t>(label)], double{FLT_MIN}));
                valid += 1;
              });
              loss += (1 - alpha) * cross_entropy / std::max(valid, 1.0);
            }
            return std::vector<Values>{{loss}};
          },
  });
}

TEST(Layers, DistillationLossErrors) {
  LayerSpec mixed = spec_of("DistillationLoss", 2);
  mixed.attrs.set("alpha", 0.5);
  expect_model_error(mixed, "third input");
  LayerSpec cold = spec_of("DistillationLoss", 2);
  cold.attrs.set("temperature", 0.0);
  expect_model_error(cold, "'temperature'");
  expect_model_error(spec_of("DistillationLoss", 3, 2), "one output");
  // A teacher with another number of classes, or another batch, names the layer and both shapes.
  expect_shape_error(spec_of("DistillationLoss", 2), {Shape{4, 10}, Shape{4, 100}}, "4x100");
  expect_shape_error(spec_of("DistillationLoss", 3), {Shape{4, 10}, Shape{8, 10}, Shape{4}}, "teacher");
  expect_shape_error(spec_of("DistillationLoss", 3), {Shape{4, 10}, Shape{4, 10}, Shape{5}}, "labels");
  expect_shape_error(spec_of("DistillationLoss", 1), {Shape{4, 10}}, "input");
  EXPECT_EQ(create_layer(spec_of("DistillationLoss", 2))->default_loss_weight(0), 1.0f);

  // Identical student and teacher scores: the soft term is zero whatever the temperature.
  LayerSpec same = spec_of("DistillationLoss", 2);
  same.attrs.set("temperature", 3.0);
  std::unique_ptr<Layer> layer = create_layer(same);
  const Tensor scores = Tensor::from(Shape{2, 3}, {0.5f, -1.0f, 2.0f, 0.0f, 0.0f, 7.0f});
  std::vector<Tensor> outputs{Tensor::empty(Shape{})};
  std::vector<Tensor> inputs{scores, scores};
  layer->forward(inputs, outputs);
  EXPECT_NEAR(outputs[0].to_vector()[0], 0.0f, 1e-6f);
}

}  // namespace espresso::testing
