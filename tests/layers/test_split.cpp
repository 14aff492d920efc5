#include <gtest/gtest.h>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, Split) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Split";
            for (int k = rng.integer(1, 4); k > 0; --k) c.spec.outputs.push_back("out" + std::to_string(k));
            c.input_shapes = {random_shape(rng)};
            return c;
          },
      .naive = [](const LayerCase& c, const std::vector<Values>& in,
                  const std::vector<Values>&) { return std::vector<Values>(c.spec.outputs.size(), in[0]); },
  });
}

TEST(Layers, SplitErrors) {
  expect_model_error(spec_of("Split", 1, 0), "output");
  expect_shape_error(spec_of("Split", 2, 2), {Shape{2}, Shape{2}}, "input");
}

}  // namespace espresso::testing
