#include <gtest/gtest.h>

#include <algorithm>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, StridedSlice) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "StridedSlice";
            const std::int64_t n = rng.integer(2, 12);
            c.input_shapes = {Shape{rng.integer(1, 3), n}};
            const std::int64_t step = rng.coin() ? rng.integer(1, 3) : -rng.integer(1, 3);
            c.spec.attrs.set("starts", std::vector<std::int64_t>{rng.integer(-14, 14)});
            c.spec.attrs.set("ends", std::vector<std::int64_t>{rng.integer(-14, 14)});
            c.spec.attrs.set("axes", std::vector<std::int64_t>{-1});
            c.spec.attrs.set("steps", std::vector<std::int64_t>{step});
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            // Python's slice semantics.
            const std::int64_t n = c.input_shapes[0][1], step = c.spec.attrs.get_ints("steps", {})[0];
            std::int64_t start = c.spec.attrs.get_ints("starts", {})[0],
                         end = c.spec.attrs.get_ints("ends", {})[0];
            if (start < 0) start += n;
            if (end < 0) end += n;
            std::vector<std::int64_t> picks;
            if (step > 0) {
              for (std::int64_t i = std::max<std::int64_t>(start, 0); i < std::min(end, n); i += step)
                picks.push_back(i);
            } else {
              for (std::int64_t i = std::min(start, n - 1); i > std::max<std::int64_t>(end, -1); i += step)
                picks.push_back(i);
            }
            Values y;
            for (std::int64_t r = 0; r < c.input_shapes[0][0]; ++r)
              for (std::int64_t i : picks) y.push_back(in[0][static_cast<std::size_t>(r * n + i)]);
            return std::vector<Values>{y};
          },
  });
}

}  // namespace espresso::testing
