#include <gtest/gtest.h>

#include <algorithm>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, MatMul) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "MatMul";
            const std::int64_t batch0 = rng.integer(1, 2), batch1 = rng.integer(1, 3), m = rng.integer(1, 9),
                               k = rng.integer(1, 17), n = rng.integer(1, 11);
            // Each operand keeps 0, 1 or 2 batch axes, each either full or broadcast (1), so shared
            // matrices, a batch folded into rows and two-sided broadcasting all occur.
            auto operand = [&](std::int64_t rows, std::int64_t cols) {
              std::vector<std::int64_t> dims;
              const int kept = static_cast<int>(rng.integer(0, 2));
              if (kept == 2) dims.push_back(rng.coin() ? batch0 : 1);
              if (kept >= 1) dims.push_back(rng.coin() ? batch1 : 1);
              dims.push_back(rows);
              dims.push_back(cols);
              return Shape(dims);
            };
            c.input_shapes = {operand(m, k), operand(k, n)};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            // Both operands padded to two batch axes with leading 1s.
            auto padded = [](const Shape& s) {
              std::vector<std::int64_t> d = s.dims();
              while (d.size() < 4) d.insert(d.begin(), 1);
              return d;
            };
            const std::vector<std::int64_t> a = padded(c.input_shapes[0]), b = padded(c.input_shapes[1]);
            const std::int64_t m = a[2], k = a[3], n = b[3];
            const std::int64_t batch0 = std::max(a[0], b[0]), batch1 = std::max(a[1], b[1]);
            Values y;
            for (std::int64_t t0 = 0; t0 < batch0; ++t0)
              for (std::int64_t t1 = 0; t1 < batch1; ++t1) {
                const std::int64_t ma = (a[0] == 1 ? 0 : t0) * a[1] + (a[1] == 1 ? 0 : t1);
                const std::int64_t mb = (b[0] == 1 ? 0 : t0) * b[1] + (b[1] == 1 ? 0 : t1);
                for (std::int64_t i = 0; i < m; ++i)
                  for (std::int64_t j = 0; j < n; ++j) {
                    double s = 0;
                    for (std::int64_t q = 0; q < k; ++q) {
                      s += in[0][static_cast<std::size_t>((ma * m + i) * k + q)] *
                           in[1][static_cast<std::size_t>((mb * k + q) * n + j)];
                    }
                    y.push_back(s);
                  }
              }
            return std::vector<Values>{y};
          },
      .cases = 40,
      .gradient = Gradient::none,
  });
}

}  // namespace espresso::testing
