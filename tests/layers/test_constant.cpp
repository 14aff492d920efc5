#include <gtest/gtest.h>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, Constant) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Constant";
            c.spec.attrs.set("shape", std::vector<std::int64_t>{rng.integer(1, 4), rng.integer(1, 9)});
            return c;
          },
      .naive = [](const LayerCase&, const std::vector<Values>&,
                  const std::vector<Values>& weights) { return weights; },
      .cases = 5,
  });
}

}  // namespace espresso::testing
