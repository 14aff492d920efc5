#include <gtest/gtest.h>

#include <cmath>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, Softmax) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Softmax";
            c.input_shapes = {random_shape(rng, 2, 5, 9)};
            int axis = 1;
            if (rng.integer(0, 3) != 0)
              c.spec.attrs.set("axis", std::int64_t{random_axis(rng, c.input_shapes[0].rank(), axis)});
            // Large values check that the maximum is subtracted before exp.
            const bool large = rng.coin();
            c.check_gradient = !large;
            for (double& x : c.inputs.emplace_back(static_cast<std::size_t>(c.input_shapes[0].numel()))) {
              x = large ? rng.uniform(-50.0, 120.0) : rng.uniform(-4.0, 4.0);
            }
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const Shape& s = c.input_shapes[0];
            const int axis = s.canonical_axis(static_cast<int>(c.spec.attrs.get_int("axis", 1)));
            const std::int64_t outer = product(s, 0, axis), classes = s[axis],
                               inner = product(s, axis + 1, s.rank());
            Values y(in[0].size());
            for (std::int64_t o = 0; o < outer; ++o) {
              for (std::int64_t i = 0; i < inner; ++i) {
                auto at = [&](std::int64_t k) {
                  return static_cast<std::size_t>((o * classes + k) * inner + i);
                };
                double max = -INFINITY, sum = 0;
                for (std::int64_t k = 0; k < classes; ++k) max = std::max(max, in[0][at(k)]);
                for (std::int64_t k = 0; k < classes; ++k) sum += std::exp(in[0][at(k)] - max);
                for (std::int64_t k = 0; k < classes; ++k) y[at(k)] = std::exp(in[0][at(k)] - max) / sum;
              }
            }
            return std::vector<Values>{y};
          },
  });
}

TEST(Layers, SoftmaxErrors) {
  LayerSpec spec = spec_of("Softmax");
  spec.attrs.set("axis", std::int64_t{3});
  expect_shape_error(spec, {Shape{2, 3, 4}}, "axis 3");
  spec.attrs.set("axis", std::int64_t{-4});
  expect_shape_error(spec, {Shape{2, 3, 4}}, "axis -4");
  spec.attrs.set("axis", std::string("last"));
  expect_model_error(spec, "'axis'");
  expect_shape_error(spec_of("Softmax", 2), {Shape{2, 3}, Shape{2, 3}}, "input");
}

}  // namespace espresso::testing
