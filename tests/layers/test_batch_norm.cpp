#include <gtest/gtest.h>

#include <cmath>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, BatchNorm) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "BatchNorm";
            if (rng.coin()) c.spec.attrs.set("eps", rng.uniform(1e-5, 1e-2));
            c.input_shapes = {random_shape(rng, 1, 5)};
            const Shape& s = c.input_shapes[0];
            const auto channels = static_cast<std::size_t>(s.rank() < 2 ? 1 : s[1]);
            // Caffe stores running sums scaled by a factor; 0 means no statistics were gathered.
            const double factor = rng.integer(0, 4) == 0 ? 0.0 : rng.uniform(0.5, 5.0);
            Values mean = rng.values(channels, -2.0, 2.0), variance = rng.values(channels, 0.05, 3.0);
            for (std::size_t k = 0; k < channels; ++k) {
              mean[k] *= factor;
              variance[k] *= factor;
            }
            c.weights = {mean, variance, {factor}};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>& w) {
            const Shape& s = c.input_shapes[0];
            const double eps = static_cast<float>(c.spec.attrs.get_float("eps", 1e-5));
            const std::int64_t channels = s.rank() < 2 ? 1 : s[1], inner = product(s, 2, s.rank());
            const double factor = w[2][0] == 0 ? 0.0 : 1.0 / w[2][0];
            Values y(in[0].size());
            for (std::int64_t n = 0; n < s[0]; ++n) {
              for (std::int64_t ch = 0; ch < channels; ++ch) {
                const auto k = static_cast<std::size_t>(ch);
                for (std::int64_t j = 0; j < inner; ++j) {
                  const auto i = static_cast<std::size_t>((n * channels + ch) * inner + j);
                  y[i] = (in[0][i] - w[0][k] * factor) / std::sqrt(w[1][k] * factor + eps);
                }
              }
            }
            return std::vector<Values>{y};
          },
      .gradient = Gradient::none,
  });
}

TEST(Layers, BatchNormErrors) {
  LayerSpec spec = spec_of("BatchNorm");
  spec.attrs.set("eps", -1.0);
  expect_model_error(spec, "'eps'");
  expect_shape_error(spec_of("BatchNorm"), {Shape{}}, "scalar");
  EXPECT_EQ(create_layer(spec_of("BatchNorm"))->weight_shapes({Shape{2, 5, 3, 3}}),
            (std::vector<Shape>{Shape{5}, Shape{5}, Shape{1}}));
  EXPECT_TRUE(create_layer(spec_of("BatchNorm"))->in_place());
}

}  // namespace espresso::testing
