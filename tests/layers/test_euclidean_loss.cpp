#include <gtest/gtest.h>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, EuclideanLoss) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "EuclideanLoss";
            const Shape a = random_shape(rng, 1, 4);
            // Caffe only needs equal counts: the targets may come flat.
            c.input_shapes = {a, rng.coin() ? a : Shape{a.numel()}};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            double sum = 0;
            for (std::size_t i = 0; i < in[0].size(); ++i)
              sum += (in[0][i] - in[1][i]) * (in[0][i] - in[1][i]);
            return std::vector<Values>{{sum / (2.0 * static_cast<double>(c.input_shapes[0][0]))}};
          },
  });
}

TEST(Layers, EuclideanLossErrors) {
  expect_shape_error(spec_of("EuclideanLoss", 2), {Shape{2, 3}, Shape{2, 4}}, "element counts");
  expect_shape_error(spec_of("EuclideanLoss", 1), {Shape{2, 3}}, "input");
  EXPECT_EQ(create_layer(spec_of("EuclideanLoss", 2))->default_loss_weight(0), 1.0f);
}

}  // namespace espresso::testing
