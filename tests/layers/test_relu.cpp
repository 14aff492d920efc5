#include <gtest/gtest.h>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, ReLU) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "ReLU";
            if (rng.coin()) c.spec.attrs.set("negative_slope", rng.uniform(0.0, 0.5));
            c.input_shapes = {
                Shape{rng.integer(1, 3), rng.integer(1, 17), rng.integer(1, 33), rng.integer(1, 31)}};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const double slope = c.spec.attrs.get_float("negative_slope", 0.0);
            Values y(in[0].size());
            for (std::size_t i = 0; i < y.size(); ++i) y[i] = in[0][i] > 0 ? in[0][i] : slope * in[0][i];
            return std::vector<Values>{y};
          },
  });
}

}  // namespace espresso::testing
