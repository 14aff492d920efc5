#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, Resize) {
  static const char* const kCoordinates[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                             "asymmetric", "tf_half_pixel_for_nn"};
  static const char* const kRounding[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Resize";
            const bool linear = rng.coin();
            std::string coordinates = kCoordinates[rng.integer(0, 4)];
            if (linear && coordinates == "tf_half_pixel_for_nn") coordinates = "half_pixel";
            c.spec.attrs.set("mode", std::string(linear ? "linear" : "nearest"));
            c.spec.attrs.set("coordinate_transformation_mode", coordinates);
            c.spec.attrs.set("nearest_mode", std::string(kRounding[rng.integer(0, 3)]));
            c.input_shapes = {Shape{1, rng.integer(1, 3), rng.integer(1, 6), rng.integer(1, 6)}};
            c.spec.attrs.set("sizes", std::vector<std::int64_t>{1, c.input_shapes[0][1], rng.integer(1, 12),
                                                                rng.integer(1, 12)});
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const bool linear = c.spec.attrs.get_string("mode", "") == "linear";
            const std::string coordinates = c.spec.attrs.get_string("coordinate_transformation_mode", "");
            const std::string rounding = c.spec.attrs.get_string("nearest_mode", "");
            const Shape& s = c.input_shapes[0];
            const auto sizes = c.spec.attrs.get_ints("sizes", {});
            // Input coordinate of output coordinate o along an axis of `n` inputs and `m` outputs.
            auto source = [&](std::int64_t o, std::int64_t n, std::int64_t m) {
              const double scale = static_cast<double>(m) / static_cast<double>(n),
                           x = static_cast<double>(o);
              if (coordinates == "half_pixel") return (x + 0.5) / scale - 0.5;
              if (coordinates == "pytorch_half_pixel") return m > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
              if (coordinates == "align_corners")
                return m == 1 ? 0.0 : x * static_cast<double>(n - 1) / static_cast<double>(m - 1);
              if (coordinates == "asymmetric") return x / scale;
              return (x + 0.5) / scale;
            };
            auto nearest = [&](double x, std::int64_t n) {
              double r = rounding == "floor"               ? std::floor(x)
                         : rounding == "ceil"              ? std::ceil(x)
                         : rounding == "round_prefer_ceil" ? std::floor(x + 0.5)
                                                           : std::ceil(x - 0.5);
              return std::clamp<std::int64_t>(static_cast<std::int64_t>(r), 0, n - 1);
            };
            Values y;
            for (std::int64_t ch = 0; ch < s[1]; ++ch)
              for (std::int64_t oh = 0; oh < sizes[2]; ++oh)
                for (std::int64_t ow = 0; ow < sizes[3]; ++ow) {
                  const double h = source(oh, s[2], sizes[2]), w = source(ow, s[3], sizes[3]);
                  if (!linear) {
                    y.push_back(in[0][at4(s, 0, ch, nearest(h, s[2]), nearest(w, s[3]))]);
                    continue;
                  }
                  const double ch_ = std::clamp(h, 0.0, static_cast<double>(s[2] - 1)),
                               cw = std::clamp(w, 0.0, static_cast<double>(s[3] - 1));
                  const auto h0 = static_cast<std::int64_t>(std::floor(ch_)),
                             w0 = static_cast<std::int64_t>(std::floor(cw));
                  const std::int64_t h1 = std::min(h0 + 1, s[2] - 1), w1 = std::min(w0 + 1, s[3] - 1);
                  const double fh = ch_ - static_cast<double>(h0), fw = cw - static_cast<double>(w0);
                  y.push_back(
                      (1 - fh) *
                          ((1 - fw) * in[0][at4(s, 0, ch, h0, w0)] + fw * in[0][at4(s, 0, ch, h0, w1)]) +
                      fh * ((1 - fw) * in[0][at4(s, 0, ch, h1, w0)] + fw * in[0][at4(s, 0, ch, h1, w1)]));
                }
            return std::vector<Values>{y};
          },
      .gradient = Gradient::none,
  });
}

}  // namespace espresso::testing
