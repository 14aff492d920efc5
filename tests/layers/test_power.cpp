#include <gtest/gtest.h>

#include <cmath>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, Power) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Power";
            const double powers[] = {1.0, 2.0, 3.0, 0.5, -1.0, 1.7, 0.0};
            const double power = powers[rng.integer(0, 6)];
            if (power != 1.0 || rng.coin()) c.spec.attrs.set("power", power);
            c.spec.attrs.set("scale", rng.uniform(-1.0, 1.0));
            // Integer powers take any base; others need a positive one to stay real.
            const bool integral = power == std::floor(power) && power >= 0;
            c.spec.attrs.set("shift", integral ? rng.uniform(-1.0, 1.0) : rng.uniform(1.5, 2.5));
            c.input_shapes = {random_shape(rng)};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const double power = c.spec.attrs.get_float("power", 1.0);
            // The layer computes in float; use the float-rounded parameters.
            const double scale = static_cast<float>(c.spec.attrs.get_float("scale", 1.0));
            const double shift = static_cast<float>(c.spec.attrs.get_float("shift", 0.0));
            Values y(in[0].size());
            for (std::size_t i = 0; i < y.size(); ++i) y[i] = std::pow(shift + scale * in[0][i], power);
            return std::vector<Values>{y};
          },
  });
}

TEST(Layers, PowerErrors) {
  LayerSpec spec = spec_of("Power");
  spec.attrs.set("power", std::string("two"));
  expect_model_error(spec, "'power'");
  spec = spec_of("Power");
  spec.attrs.set("scale", INFINITY);
  expect_model_error(spec, "finite");
  expect_shape_error(spec_of("Power", 2), {Shape{1}, Shape{1}}, "input");
}

}  // namespace espresso::testing
