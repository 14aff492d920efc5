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
      .gradient_cases = 20,
  });
}

// Keys cubic interpolation (coefficient A) of the H and W axes, optionally without the taps that
// fall outside the input, and the linear crop-and-resize of TensorFlow with its fill value.
TEST(Layers, ResizeCubicAndCrop) {
  static const char* const kCoordinates[] = {"half_pixel", "align_corners", "asymmetric",
                                             "pytorch_half_pixel"};
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Resize";
            const std::int64_t channels = rng.integer(1, 3);
            c.input_shapes = {Shape{1, channels, rng.integer(1, 7), rng.integer(1, 7)}};
            c.spec.attrs.set("sizes",
                             std::vector<std::int64_t>{1, channels, rng.integer(1, 12), rng.integer(1, 12)});
            if (rng.coin()) {
              c.spec.attrs.set("mode", std::string("cubic"));
              c.spec.attrs.set("coordinate_transformation_mode",
                               std::string(kCoordinates[rng.integer(0, 3)]));
              c.spec.attrs.set("cubic_coeff_a", rng.coin() ? -0.75 : -0.5);
              c.spec.attrs.set("exclude_outside", std::int64_t{rng.integer(0, 1)});
            } else {
              c.spec.attrs.set("mode", std::string("linear"));
              c.spec.attrs.set("coordinate_transformation_mode", std::string("tf_crop_and_resize"));
              c.spec.attrs.set("roi", std::vector<double>{0, 0, rng.coin() ? -0.2 : 0.1, 0.3, 1, 1, 0.8,
                                                          rng.coin() ? 1.3 : 0.9});
              c.spec.attrs.set("extrapolation_value", 2.5);
            }
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const bool cubic = c.spec.attrs.get_string("mode", "") == "cubic";
            const std::string coordinates = c.spec.attrs.get_string("coordinate_transformation_mode", "");
            const double a = c.spec.attrs.get_float("cubic_coeff_a", -0.75);
            const bool exclude = c.spec.attrs.get_int("exclude_outside", 0) != 0;
            const auto roi = c.spec.attrs.get_floats("roi", {});
            const Shape& s = c.input_shapes[0];
            const auto sizes = c.spec.attrs.get_ints("sizes", {});
            // The interpolation kernel's weight at distance d.
            auto keys = [&](double d) {
              d = std::abs(d);
              if (d <= 1) return (a + 2) * d * d * d - (a + 3) * d * d + 1;
              if (d < 2) return a * d * d * d - 5 * a * d * d + 8 * a * d - 4 * a;
              return 0.0;
            };
            // Per output coordinate of an axis: (input index, weight) pairs; empty when outside.
            auto taps = [&](std::int64_t o, std::int64_t n, std::int64_t m, int axis) {
              const double scale = static_cast<double>(m) / static_cast<double>(n),
                           x = static_cast<double>(o);
              double src = 0;
              if (coordinates == "half_pixel") src = (x + 0.5) / scale - 0.5;
              if (coordinates == "pytorch_half_pixel") src = m > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
              if (coordinates == "align_corners")
                src = m == 1 ? 0.0 : x * static_cast<double>(n - 1) / static_cast<double>(m - 1);
              if (coordinates == "asymmetric") src = x / scale;
              std::vector<std::pair<std::int64_t, double>> result;
              if (coordinates == "tf_crop_and_resize") {
                const double start = roi[static_cast<std::size_t>(axis)],
                             end = roi[static_cast<std::size_t>(axis + 4)];
                const double n1 = static_cast<double>(n - 1);
                src = m == 1 ? (end - start) * n1 / 2 : x * (end - start) * n1 / static_cast<double>(m - 1);
                src += start * n1;
                if (src < 0 || src > n1) return result;
              }
              const double base = std::floor(src);
              double total = 0;
              for (int tap = cubic ? -1 : 0; tap <= (cubic ? 2 : 1); ++tap) {
                const double position = base + tap;
                const double w = cubic ? keys(src - position) : 1 - std::abs(src - position);
                const bool inside = position >= 0 && position <= static_cast<double>(n - 1);
                if (exclude && !inside) continue;
                total += w;
                result.emplace_back(std::clamp<std::int64_t>(static_cast<std::int64_t>(position), 0, n - 1),
                                    w);
              }
              if (exclude)
                for (auto& t : result) t.second /= total;
              return result;
            };
            Values y;
            for (std::int64_t ch = 0; ch < s[1]; ++ch)
              for (std::int64_t oh = 0; oh < sizes[2]; ++oh)
                for (std::int64_t ow = 0; ow < sizes[3]; ++ow) {
                  const auto th = taps(oh, s[2], sizes[2], 2), tw = taps(ow, s[3], sizes[3], 3);
                  const bool channel_outside = taps(ch, s[1], s[1], 1).empty();
                  if (th.empty() || tw.empty() || channel_outside) {
                    y.push_back(2.5);
                    continue;
                  }
                  double sum = 0;
                  for (const auto& [h, wh] : th)
                    for (const auto& [w, ww] : tw) sum += wh * ww * in[0][at4(s, 0, ch, h, w)];
                  y.push_back(sum);
                }
            return std::vector<Values>{y};
          },
      .cases = 40,
      .gradient_cases = 40,
  });
}

}  // namespace espresso::testing
