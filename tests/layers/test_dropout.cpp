#include <gtest/gtest.h>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, Dropout) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Dropout";
            if (rng.coin()) c.spec.attrs.set("ratio", rng.uniform(0.0, 0.9));
            c.input_shapes = {random_shape(rng)};
            return c;
          },
      .naive = [](const LayerCase&, const std::vector<Values>& in,
                  const std::vector<Values>&) { return std::vector<Values>{in[0]}; },
      .gradient = Gradient::none,
  });
}

TEST(Layers, DropoutErrors) {
  LayerSpec spec = spec_of("Dropout");
  spec.attrs.set("ratio", 1.0);
  expect_model_error(spec, "'ratio'");
  spec.attrs.set("ratio", -0.1);
  expect_model_error(spec, "'ratio'");
  spec.attrs.set("ratio", std::string("half"));
  expect_model_error(spec, "'ratio'");
  expect_shape_error(spec_of("Dropout", 0), {}, "input");
  EXPECT_TRUE(create_layer(spec_of("Dropout"))->in_place());
}

}  // namespace espresso::testing
