#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, Reduce) {
  static const char* const kOps[] = {"mean",       "sum", "max", "min",     "prod",
                                     "sum_square", "l1",  "l2",  "log_sum", "log_sum_exp"};
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Reduce";
            c.spec.attrs.set("operation", std::string(kOps[rng.integer(0, 9)]));
            c.spec.attrs.set("axes", std::vector<std::int64_t>{rng.coin() ? 1 : -1});
            c.spec.attrs.set("keepdims", static_cast<std::int64_t>(rng.coin()));
            c.input_shapes = {Shape{rng.integer(1, 4), rng.integer(1, 6), rng.integer(1, 7)}};
            c.inputs = {rng.values(static_cast<std::size_t>(c.input_shapes[0].numel()), 0.5, 1.5)};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const std::string op = c.spec.attrs.get_string("operation", "");
            const bool middle = c.spec.attrs.get_ints("axes", {})[0] == 1;
            const Shape& s = c.input_shapes[0];
            Values y;
            const std::int64_t k = middle ? s[1] : s[2];
            for (std::int64_t a = 0; a < s[0]; ++a)
              for (std::int64_t b = 0; b < (middle ? s[2] : s[1]); ++b) {
                Values v;
                for (std::int64_t r = 0; r < k; ++r) {
                  const std::int64_t j = middle ? r : b, l = middle ? b : r;
                  v.push_back(in[0][static_cast<std::size_t>((a * s[1] + j) * s[2] + l)]);
                }
                double r = op == "prod" ? 1 : op == "max" ? -1e300 : op == "min" ? 1e300 : 0;
                for (double x : v) {
                  if (op == "mean" || op == "sum" || op == "log_sum") r += x;
                  if (op == "max") r = std::max(r, x);
                  if (op == "min") r = std::min(r, x);
                  if (op == "prod") r *= x;
                  if (op == "sum_square" || op == "l2") r += x * x;
                  if (op == "l1") r += std::abs(x);
                  if (op == "log_sum_exp") r += std::exp(x);
                }
                if (op == "mean") r /= static_cast<double>(k);
                if (op == "l2") r = std::sqrt(r);
                if (op == "log_sum" || op == "log_sum_exp") r = std::log(r);
                y.push_back(r);
              }
            return std::vector<Values>{y};
          },
      .gradient = Gradient::none,
  });
}

}  // namespace espresso::testing
