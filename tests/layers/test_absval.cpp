#include <gtest/gtest.h>

#include <cmath>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, AbsVal) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "AbsVal";
            c.input_shapes = {random_shape(rng)};
            for (double& x : c.inputs.emplace_back(static_cast<std::size_t>(c.input_shapes[0].numel()))) {
              x = rng.uniform(-6.0, 6.0);
            }
            return c;
          },
      .naive =
          [](const LayerCase&, const std::vector<Values>& in, const std::vector<Values>&) {
            Values y(in[0].size());
            for (std::size_t i = 0; i < y.size(); ++i) y[i] = std::fabs(in[0][i]);
            return std::vector<Values>{y};
          },
  });
}

TEST(Layers, AbsValErrors) {
  expect_shape_error(spec_of("AbsVal", 2), {Shape{2, 3}, Shape{2, 3}}, "input");
  EXPECT_TRUE(create_layer(spec_of("AbsVal"))->in_place());
}

}  // namespace espresso::testing
