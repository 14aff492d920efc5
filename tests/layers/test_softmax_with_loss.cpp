#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>

#include "layers/labels_case.h"

namespace espresso::testing {

TEST(Layers, SoftmaxWithLoss) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c = random_labels_case(rng, "SoftmaxWithLoss");
            const char* normalizations[] = {"valid", "batch_size", "full", "none"};
            if (rng.integer(0, 4) != 0)
              c.spec.attrs.set("normalization", std::string(normalizations[rng.integer(0, 3)]));
            c.spec.outputs = {"loss"};
            if (rng.coin()) c.spec.outputs.push_back("prob");
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const Shape& s = c.input_shapes[0];
            const int axis = s.canonical_axis(static_cast<int>(c.spec.attrs.get_int("axis", 1)));
            const std::int64_t outer = product(s, 0, axis), classes = s[axis],
                               inner = product(s, axis + 1, s.rank());
            Values prob(in[0].size());
            for (std::int64_t o = 0; o < outer; ++o) {
              for (std::int64_t i = 0; i < inner; ++i) {
                auto at = [&](std::int64_t k) {
                  return static_cast<std::size_t>((o * classes + k) * inner + i);
                };
                double sum = 0;
                for (std::int64_t k = 0; k < classes; ++k) sum += std::exp(in[0][at(k)]);
                for (std::int64_t k = 0; k < classes; ++k) prob[at(k)] = std::exp(in[0][at(k)]) / sum;
              }
            }
            double loss = 0, valid = 0;
            for_each_label(c, in[1], [&](std::int64_t o, std::int64_t i, std::int64_t label) {
              loss -= std::log(std::max(prob[static_cast<std::size_t>((o * classes + label) * inner + i)],
                                        double{FLT_MIN}));
              valid += 1;
            });
            const std::string normalization = c.spec.attrs.get_string("normalization", "valid");
            double normalizer = 1;
            if (normalization == "valid") normalizer = valid;
            if (normalization == "batch_size") normalizer = static_cast<double>(outer);
            if (normalization == "full") normalizer = static_cast<double>(outer * inner);
            std::vector<Values> out{{loss / std::max(1.0, normalizer)}};
            if (c.spec.outputs.size() == 2) out.push_back(prob);
            return out;
          },
  });
}

TEST(Layers, SoftmaxWithLossErrors) {
  LayerSpec spec = spec_of("SoftmaxWithLoss", 2);
  spec.attrs.set("normalization", std::string("mean"));
  expect_model_error(spec, "'normalization'");
  expect_model_error(spec_of("SoftmaxWithLoss", 2, 3), "outputs");
  expect_shape_error(spec_of("SoftmaxWithLoss", 2), {Shape{4, 5, 3}, Shape{4, 5}}, "labels");
  LayerSpec axis = spec_of("SoftmaxWithLoss", 2);
  axis.attrs.set("axis", std::int64_t{-3});
  expect_shape_error(axis, {Shape{4, 5}, Shape{4}}, "axis -3");

  LayerSpec ignoring = spec_of("SoftmaxWithLoss", 2);
  ignoring.attrs.set("ignore_label", std::int64_t{7});
  std::unique_ptr<Layer> layer = create_layer(ignoring);
  std::vector<Tensor> outputs{Tensor::empty(Shape{})};
  std::vector<Tensor> all_ignored{Tensor::zeros(Shape{2, 3}), Tensor::from(Shape{2}, {7.0f, 7.0f})};
  layer->forward(all_ignored, outputs);
  EXPECT_EQ(outputs[0].to_vector()[0], 0.0f);
  std::vector<Tensor> bad{Tensor::zeros(Shape{2, 3}), Tensor::from(Shape{2}, {1.0f, 3.0f})};
  expect_error<DataError>([&] { layer->forward(bad, outputs); }, "label 1");
}

}  // namespace espresso::testing
