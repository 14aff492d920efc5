#include <gtest/gtest.h>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, MatMul) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "MatMul";
            const std::int64_t batch = rng.integer(1, 3), m = rng.integer(1, 9), k = rng.integer(1, 17),
                               n = rng.integer(1, 11);
            // Either operand may be a shared (un-batched) matrix.
            c.input_shapes = {rng.coin() ? Shape{batch, m, k} : Shape{m, k}, Shape{batch, k, n}};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const Shape &a = c.input_shapes[0], &b = c.input_shapes[1];
            const std::int64_t batch = b[0], k = b[1], n = b[2], m = a[a.rank() - 2];
            const bool shared = a.rank() == 2;
            Values y;
            for (std::int64_t t = 0; t < batch; ++t)
              for (std::int64_t i = 0; i < m; ++i)
                for (std::int64_t j = 0; j < n; ++j) {
                  double s = 0;
                  for (std::int64_t q = 0; q < k; ++q) {
                    s += in[0][static_cast<std::size_t>(((shared ? 0 : t) * m + i) * k + q)] *
                         in[1][static_cast<std::size_t>((t * k + q) * n + j)];
                  }
                  y.push_back(s);
                }
            return std::vector<Values>{y};
          },
      .gradient = Gradient::none,
  });
}

}  // namespace espresso::testing
