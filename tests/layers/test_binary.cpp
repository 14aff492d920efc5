#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, Binary) {
  static const char* const kOps[] = {"add", "sub", "mul", "div", "max", "min", "pow"};
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Binary";
            c.spec.attrs.set("operation", std::string(kOps[rng.integer(0, 6)]));
            std::vector<std::int64_t> a{rng.integer(1, 3), rng.integer(1, 5), rng.integer(1, 6)}, b = a;
            const int form = rng.integer(0, 5);
            if (form == 1) {
              // The fast CPU kernel's forms, large enough to be split over threads: the same shape,
              // one value per channel or a scalar, on either side.
              a = {rng.integer(1, 2), rng.integer(8, 16), rng.integer(500, 1100)};
              const int small = rng.integer(0, 2);
              b = small == 0   ? a
                  : small == 1 ? std::vector<std::int64_t>{1, a[1], 1}
                               : std::vector<std::int64_t>{1, 1, 1};
              if (small != 0 && rng.coin()) std::swap(a, b);
            } else if (form == 0) {
              // Large, with b broadcast over all of it: its gradient sums thousands of outputs.
              a = {rng.integer(1, 3), rng.integer(30, 60), rng.integer(30, 60)};
              b = {1, 1, 1};
            } else {
              // Broadcast both ways: each axis is whole in both, 1 in b, or 1 in a.
              for (std::size_t k = 0; k < b.size(); ++k) {
                const int pick = rng.integer(0, 3);
                if (pick == 2) b[k] = 1;
                if (pick == 3) a[k] = 1;
              }
            }
            if (b[0] == 1 && rng.coin()) b.erase(b.begin());
            c.input_shapes = {Shape(a), Shape(b)};
            c.inputs = {rng.values(static_cast<std::size_t>(Shape(a).numel()), 0.5, 2.0),
                        rng.values(static_cast<std::size_t>(Shape(b).numel()), 0.5, 2.0)};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const std::string op = c.spec.attrs.get_string("operation", "");
            const Shape& a = c.input_shapes[0];
            Shape b = c.input_shapes[1];
            if (b.rank() < a.rank())
              b = Shape([&] {
                auto d = b.dims();
                d.insert(d.begin(), 1);
                return d;
              }());
            Values y;
            for (std::int64_t i = 0; i < std::max(a[0], b[0]); ++i)
              for (std::int64_t j = 0; j < std::max(a[1], b[1]); ++j)
                for (std::int64_t k = 0; k < std::max(a[2], b[2]); ++k) {
                  const std::int64_t ai = a[0] == 1 ? 0 : i, aj = a[1] == 1 ? 0 : j, ak = a[2] == 1 ? 0 : k;
                  const std::int64_t bi = b[0] == 1 ? 0 : i, bj = b[1] == 1 ? 0 : j, bk = b[2] == 1 ? 0 : k;
                  const double x = in[0][static_cast<std::size_t>((ai * a[1] + aj) * a[2] + ak)];
                  const double z = in[1][static_cast<std::size_t>((bi * b[1] + bj) * b[2] + bk)];
                  y.push_back(op == "add"   ? x + z
                              : op == "sub" ? x - z
                              : op == "mul" ? x * z
                              : op == "div" ? x / z
                              : op == "max" ? std::max(x, z)
                              : op == "min" ? std::min(x, z)
                                            : std::pow(x, z));
                }
            return std::vector<Values>{y};
          },
      .gradient_cases = 12,
  });
}

}  // namespace espresso::testing
