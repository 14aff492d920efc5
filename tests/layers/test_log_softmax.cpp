#include <gtest/gtest.h>

#include <cmath>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, LogSoftmax) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "LogSoftmax";
            c.spec.attrs.set("axis", static_cast<std::int64_t>(rng.integer(0, 2)));
            // Axes of size 2 and more: a single-element axis gives all zeros, where relative error is
            // meaningless.
            c.input_shapes = {Shape{rng.integer(2, 4), rng.integer(2, 9), rng.integer(2, 7)}};
            c.inputs = {rng.values(static_cast<std::size_t>(c.input_shapes[0].numel()), -10, 10)};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const int axis = static_cast<int>(c.spec.attrs.get_int("axis", 1));
            const Shape& s = c.input_shapes[0];
            Values y(in[0].size());
            const std::int64_t outer = s.count(0, axis), size = s[axis], inner = s.count(axis + 1);
            for (std::int64_t o = 0; o < outer; ++o)
              for (std::int64_t i = 0; i < inner; ++i) {
                double sum = 0;
                for (std::int64_t k = 0; k < size; ++k)
                  sum += std::exp(in[0][static_cast<std::size_t>((o * size + k) * inner + i)]);
                for (std::int64_t k = 0; k < size; ++k) {
                  const auto at = static_cast<std::size_t>((o * size + k) * inner + i);
                  y[at] = in[0][at] - std::log(sum);
                }
              }
            return std::vector<Values>{y};
          },
  });
}

}  // namespace espresso::testing
