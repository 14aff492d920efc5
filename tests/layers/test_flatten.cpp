#include <gtest/gtest.h>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, Flatten) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Flatten";
            const Shape s = random_shape(rng);
            int first = 1, last = s.rank() - 1;
            if (rng.integer(0, 3) != 0)
              c.spec.attrs.set("axis", std::int64_t{random_axis(rng, s.rank(), first)});
            if (rng.coin()) {
              last = rng.integer(first, s.rank() - 1);
              c.spec.attrs.set("end_axis", std::int64_t{rng.coin() ? last : last - s.rank()});
            }
            c.input_shapes = {s};
            std::vector<std::int64_t> expected(s.dims().begin(), s.dims().begin() + first);
            expected.push_back(product(s, first, last + 1));
            expected.insert(expected.end(), s.dims().begin() + last + 1, s.dims().end());
            EXPECT_EQ(create_layer(c.spec)->output_shapes(c.input_shapes),
                      std::vector<Shape>{Shape(expected)});
            return c;
          },
      .naive = [](const LayerCase&, const std::vector<Values>& in,
                  const std::vector<Values>&) { return std::vector<Values>{in[0]}; },
  });
}

TEST(Layers, FlattenErrors) {
  LayerSpec spec = spec_of("Flatten");
  spec.attrs.set("axis", std::int64_t{2});
  spec.attrs.set("end_axis", std::int64_t{1});
  expect_shape_error(spec, {Shape{2, 3, 4}}, "ordered range");
  spec.attrs.set("axis", std::int64_t{5});
  expect_shape_error(spec, {Shape{2, 3, 4}}, "input shape 2x3x4");
  expect_shape_error(spec_of("Flatten"), {Shape{}}, "scalar");
}

}  // namespace espresso::testing
