#include <gtest/gtest.h>

#include <algorithm>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, Pad) {
  static const char* const kModes[] = {"constant", "reflect", "edge"};
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Pad";
            const std::string mode = kModes[rng.integer(0, 2)];
            c.spec.attrs.set("mode", mode);
            c.spec.attrs.set("value", rng.uniform(-1, 1));
            c.input_shapes = {
                Shape{rng.integer(1, 2), rng.integer(1, 3), rng.integer(3, 7), rng.integer(3, 8)}};
            // Negative amounts crop; wide edge padding sends many outputs' gradients to one input.
            const int most = mode == "edge" ? 4 : 2;
            c.spec.attrs.set("pads",
                             std::vector<std::int64_t>{0, 0, rng.integer(-1, most), rng.integer(-1, most), 0,
                                                       mode == "constant" ? rng.integer(0, 1) : 0,
                                                       rng.integer(-1, most), rng.integer(-1, most)});
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const std::string mode = c.spec.attrs.get_string("mode", "");
            const auto p = c.spec.attrs.get_ints("pads", {});
            const Shape& s = c.input_shapes[0];
            auto source = [&](std::int64_t o, std::int64_t begin, std::int64_t size, bool& outside) {
              std::int64_t i = o - begin;
              if (i >= 0 && i < size) return i;
              if (mode == "constant") outside = true;
              if (mode == "edge") return std::clamp<std::int64_t>(i, 0, size - 1);
              return i < 0 ? -i : 2 * (size - 1) - i;
            };
            Values y;
            for (std::int64_t n = 0; n < s[0]; ++n)
              for (std::int64_t ch = 0; ch < s[1] + p[5]; ++ch)
                for (std::int64_t h = 0; h < s[2] + p[2] + p[6]; ++h)
                  for (std::int64_t w = 0; w < s[3] + p[3] + p[7]; ++w) {
                    bool outside = false;
                    const std::int64_t sc = source(ch, 0, s[1], outside), sh = source(h, p[2], s[2], outside),
                                       sw = source(w, p[3], s[3], outside);
                    y.push_back(outside ? c.spec.attrs.get_float("value", 0) : in[0][at4(s, n, sc, sh, sw)]);
                  }
            return std::vector<Values>{y};
          },
  });
}

}  // namespace espresso::testing
