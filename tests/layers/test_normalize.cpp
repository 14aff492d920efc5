#include <gtest/gtest.h>

#include <cmath>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, Normalize) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Normalize";
            c.spec.attrs.set("across_spatial", std::int64_t{rng.coin()});
            c.spec.attrs.set("channel_shared", std::int64_t{rng.coin()});
            c.spec.attrs.set("eps", rng.coin() ? 1e-10 : 0.01);
            c.input_shapes = {Shape{rng.integer(1, 3), rng.integer(1, 6), rng.integer(1, 4), rng.integer(1, 5)}};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>& w) {
            const Shape& s = c.input_shapes[0];
            const bool across = c.spec.attrs.get_int("across_spatial", 1) != 0;
            const bool shared = c.spec.attrs.get_int("channel_shared", 1) != 0;
            const double eps = c.spec.attrs.get_float("eps", 0);
            Values y(in[0].size());
            for (std::int64_t n = 0; n < s[0]; ++n) {
              double total = 0;
              for (std::int64_t ch = 0; ch < s[1]; ++ch)
                for (std::int64_t h = 0; h < s[2]; ++h)
                  for (std::int64_t x = 0; x < s[3]; ++x) total += in[0][at4(s, n, ch, h, x)] * in[0][at4(s, n, ch, h, x)];
              for (std::int64_t h = 0; h < s[2]; ++h)
                for (std::int64_t x = 0; x < s[3]; ++x) {
                  double column = 0;
                  for (std::int64_t ch = 0; ch < s[1]; ++ch)
                    column += in[0][at4(s, n, ch, h, x)] * in[0][at4(s, n, ch, h, x)];
                  const double norm = std::sqrt((across ? total : column) + eps);
                  for (std::int64_t ch = 0; ch < s[1]; ++ch) {
                    const double scale = w[0][shared ? 0 : static_cast<std::size_t>(ch)];
                    y[at4(s, n, ch, h, x)] = scale * in[0][at4(s, n, ch, h, x)] / norm;
                  }
                }
            }
            return std::vector<Values>{y};
          },
  });
}

}  // namespace espresso::testing
