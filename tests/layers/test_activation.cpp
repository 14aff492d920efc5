#include <gtest/gtest.h>

#include <cmath>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, Activation) {
  static const char* const kFunctions[] = {
      "clip", "hard_sigmoid", "hard_swish", "elu", "selu", "softplus", "softsign",   "exp",
      "neg",  "floor",        "ceil",       "abs", "log",  "sqrt",     "reciprocal", "float16"};
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            const std::string f = kFunctions[rng.integer(0, 15)];
            c.spec.type = "Activation";
            c.spec.attrs.set("function", f);
            if (f == "clip") {
              c.spec.attrs.set("min", rng.uniform(-1.0, 0.0));
              c.spec.attrs.set("max", rng.uniform(0.0, 1.0));
            }
            if (f == "hard_sigmoid" || f == "elu") c.spec.attrs.set("alpha", rng.uniform(0.1, 1.0));
            c.input_shapes = {Shape{rng.integer(1, 3), rng.integer(1, 9), rng.integer(1, 13)}};
            const bool positive = f == "log" || f == "sqrt" || f == "reciprocal";
            // float16 sees values near its largest (65504) and below its smallest normal (2^-14).
            const double range = f == "float16" ? (rng.coin() ? 6e4 : 1e-4) : 8.0;
            c.inputs = {rng.values(static_cast<std::size_t>(c.input_shapes[0].numel()),
                                   positive ? 0.1 : -range, range)};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const std::string f = c.spec.attrs.get_string("function", "");
            const double alpha = c.spec.attrs.get_float("alpha", f == "hard_sigmoid" ? 0.2 : 1.0);
            Values y;
            for (double x : in[0]) {
              double r = 0;
              if (f == "clip")
                r = std::min(std::max(x, c.spec.attrs.get_float("min", 0)), c.spec.attrs.get_float("max", 0));
              if (f == "hard_sigmoid") r = std::max(0.0, std::min(1.0, alpha * x + 0.5));
              if (f == "hard_swish") r = x * std::max(0.0, std::min(1.0, x / 6 + 0.5));
              if (f == "elu") r = x > 0 ? x : alpha * (std::exp(x) - 1);
              if (f == "selu") r = 1.0507009873554805 * (x > 0 ? x : 1.6732632423543772 * (std::exp(x) - 1));
              if (f == "softplus") r = std::log(1 + std::exp(x));
              if (f == "softsign") r = x / (1 + std::abs(x));
              if (f == "exp") r = std::exp(x);
              if (f == "neg") r = -x;
              if (f == "floor") r = std::floor(x);
              if (f == "ceil") r = std::ceil(x);
              if (f == "abs") r = std::abs(x);
              if (f == "log") r = std::log(x);
              if (f == "sqrt") r = std::sqrt(x);
              if (f == "reciprocal") r = 1 / x;
              if (f == "float16") {
                // Spacing of float16 values near x: 2^(e−10) for |x| in [2^e, 2^(e+1)), at least 2^-24.
                const double spacing =
                    std::pow(2.0, std::max(std::floor(std::log2(std::abs(x))), -14.0) - 10);
                const double q = x / spacing, below = std::floor(q);
                const bool up = q - below > 0.5 || (q - below == 0.5 && std::fmod(below, 2.0) != 0);
                r = (up ? below + 1 : below) * spacing;
                if (std::abs(r) > 65504) r = x > 0 ? INFINITY : -INFINITY;
              }
              y.push_back(r);
            }
            return std::vector<Values>{y};
          },
      .gradient = Gradient::none,
  });
}

}  // namespace espresso::testing
