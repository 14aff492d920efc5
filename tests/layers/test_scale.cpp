#include <gtest/gtest.h>

#include "layers/broadcast_case.h"

namespace espresso::testing {

TEST(Layers, Scale) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c = random_broadcast_case(rng, "Scale", rng.integer(0, 2) == 0);
            if (rng.coin()) c.spec.attrs.set("bias", std::int64_t{rng.integer(0, 1)});
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>& w) {
            int first = 0, end = 0;
            broadcast_span(c, first, end);
            const bool given = in.size() == 2, bias = c.spec.attrs.get_int("bias", 0) != 0;
            const Values& scale = given ? in[1] : w[0];
            return std::vector<Values>{broadcast_naive(
                c.input_shapes[0], first, end, in[0],
                [&](double x, std::size_t k) { return x * scale[k] + (bias ? w.back()[k] : 0.0); })};
          },
  });
}

// Channels of ~38k elements: on the GPU several blocks sum each channel's parameter gradients
// (channel_reduce.cuh).
TEST(Layers, ScaleOnFewWideChannels) {
  run_layer_test({
      .make_case =
          [](Rng&) {
            LayerCase c;
            c.spec.type = "Scale";
            c.spec.attrs.set("bias", std::int64_t{1});
            c.input_shapes = {Shape{5, 2, 91, 83}};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>& w) {
            return std::vector<Values>{
                broadcast_naive(c.input_shapes[0], 1, 2, in[0],
                                [&](double x, std::size_t k) { return x * w[0][k] + w[1][k]; })};
          },
      .cases = 2,
      .gradient_cases = 1,
  });
}

TEST(Layers, ScaleErrors) {
  LayerSpec spec = spec_of("Scale");
  spec.attrs.set("num_axes", std::int64_t{-2});
  expect_model_error(spec, "'num_axes'");
  spec.attrs.set("num_axes", std::int64_t{3});
  expect_shape_error(spec, {Shape{2, 3, 4}}, "runs past the end");
  spec = spec_of("Scale");
  spec.attrs.set("axis", std::int64_t{-4});
  expect_shape_error(spec, {Shape{2, 3, 4}}, "axis -4");
  expect_shape_error(spec_of("Scale", 2), {Shape{2, 3, 4}, Shape{4}}, "does not match");
  expect_shape_error(spec_of("Scale", 3), {Shape{2, 3}, Shape{3}, Shape{3}}, "input");
  EXPECT_TRUE(create_layer(spec_of("Scale"))->in_place());

  LayerSpec with_bias = spec_of("Scale");
  with_bias.attrs.set("bias", std::int64_t{1});
  with_bias.attrs.set("num_axes", std::int64_t{2});
  EXPECT_EQ(create_layer(with_bias)->weight_shapes({Shape{2, 3, 4, 5}}),
            (std::vector<Shape>{Shape{3, 4}, Shape{3, 4}}));
  with_bias.inputs.push_back("scale");
  EXPECT_EQ(create_layer(with_bias)->weight_shapes({Shape{2, 3, 4, 5}, Shape{3}}),
            (std::vector<Shape>{Shape{3}}));
}

}  // namespace espresso::testing
