#include <gtest/gtest.h>

#include <algorithm>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, Transpose) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Transpose";
            std::vector<std::int64_t> perm{0, 1, 2, 3};
            for (int i = 3; i > 0; --i)
              std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(rng.integer(0, i))]);
            c.spec.attrs.set("perm", perm);
            c.input_shapes = {
                Shape{rng.integer(1, 3), rng.integer(1, 5), rng.integer(1, 6), rng.integer(1, 7)}};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const auto perm = c.spec.attrs.get_ints("perm", {});
            const Shape& s = c.input_shapes[0];
            Values y(in[0].size());
            std::int64_t o[4];
            for (o[0] = 0; o[0] < s[static_cast<int>(perm[0])]; ++o[0])
              for (o[1] = 0; o[1] < s[static_cast<int>(perm[1])]; ++o[1])
                for (o[2] = 0; o[2] < s[static_cast<int>(perm[2])]; ++o[2])
                  for (o[3] = 0; o[3] < s[static_cast<int>(perm[3])]; ++o[3]) {
                    std::int64_t i[4];
                    for (int k = 0; k < 4; ++k) i[perm[static_cast<std::size_t>(k)]] = o[k];
                    const std::int64_t out =
                        ((o[0] * s[static_cast<int>(perm[1])] + o[1]) * s[static_cast<int>(perm[2])] + o[2]) *
                            s[static_cast<int>(perm[3])] +
                        o[3];
                    y[static_cast<std::size_t>(out)] = in[0][at4(s, i[0], i[1], i[2], i[3])];
                  }
            return std::vector<Values>{y};
          },
  });
}

}  // namespace espresso::testing
