#include <gtest/gtest.h>

#include "layers/broadcast_case.h"

namespace espresso::testing {

TEST(Layers, Bias) {
  run_layer_test({
      .make_case = [](Rng& rng) { return random_broadcast_case(rng, "Bias", rng.integer(0, 2) == 0); },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>& w) {
            int first = 0, end = 0;
            broadcast_span(c, first, end);
            const Values& bias = in.size() == 2 ? in[1] : w[0];
            return std::vector<Values>{broadcast_naive(c.input_shapes[0], first, end, in[0],
                                                       [&](double x, std::size_t k) { return x + bias[k]; })};
          },
  });
}

TEST(Layers, BiasErrors) {
  LayerSpec spec = spec_of("Bias");
  spec.attrs.set("num_axes", std::int64_t{-3});
  expect_model_error(spec, "'num_axes'");
  spec.attrs.set("num_axes", std::int64_t{2});
  spec.attrs.set("axis", std::int64_t{-1});
  expect_shape_error(spec, {Shape{2, 3, 4}}, "runs past the end");
  expect_shape_error(spec_of("Bias", 2), {Shape{2, 3, 4}, Shape{3, 5}}, "does not match");
  expect_shape_error(spec_of("Bias", 2), {Shape{2, 3}, Shape{3, 1, 1}}, "runs past the end");
  EXPECT_TRUE(create_layer(spec_of("Bias"))->in_place());
  EXPECT_EQ(create_layer(spec_of("Bias"))->weight_shapes({Shape{2, 3, 4}}), (std::vector<Shape>{Shape{3}}));
  EXPECT_TRUE(create_layer(spec_of("Bias", 2))->weight_shapes({Shape{2, 3, 4}, Shape{3}}).empty());
}

}  // namespace espresso::testing
