#include <gtest/gtest.h>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, PReLU) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "PReLU";
            if (rng.coin()) c.spec.attrs.set("channel_shared", static_cast<std::int64_t>(rng.integer(0, 1)));
            c.input_shapes = {random_shape(rng)};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>& w) {
            const Shape& s = c.input_shapes[0];
            const bool shared = c.spec.attrs.get_int("channel_shared", 0) != 0;
            const std::int64_t inner = product(s, 2, s.rank());
            Values y(in[0].size());
            for (std::int64_t n = 0; n < s[0]; ++n) {
              for (std::int64_t ch = 0; ch < s[1]; ++ch) {
                const double slope = w[0][shared ? 0 : static_cast<std::size_t>(ch)];
                for (std::int64_t k = 0; k < inner; ++k) {
                  const auto i = static_cast<std::size_t>((n * s[1] + ch) * inner + k);
                  y[i] = in[0][i] > 0 ? in[0][i] : slope * in[0][i];
                }
              }
            }
            return std::vector<Values>{y};
          },
  });
}

TEST(Layers, PReLUErrors) {
  expect_shape_error(spec_of("PReLU"), {Shape{5}}, "channel axis");
  expect_shape_error(spec_of("PReLU", 2), {Shape{2, 3}, Shape{3}}, "input");
  LayerSpec shared = spec_of("PReLU");
  shared.attrs.set("channel_shared", std::int64_t{1});
  EXPECT_EQ(create_layer(shared)->weight_shapes({Shape{2, 7, 3}}), std::vector<Shape>{Shape{1}});
  EXPECT_EQ(create_layer(spec_of("PReLU"))->weight_shapes({Shape{2, 7, 3}}), std::vector<Shape>{Shape{7}});
}

}  // namespace espresso::testing
