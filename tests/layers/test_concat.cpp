#include <gtest/gtest.h>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, Concat) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Concat";
            const Shape base = random_shape(rng);
            int axis = 1;
            if (rng.integer(0, 3) != 0)
              c.spec.attrs.set("axis", std::int64_t{random_axis(rng, base.rank(), axis)});
            for (int k = rng.integer(1, 4); k > 0; --k) {
              Shape s = base;
              s[axis] = rng.integer(1, 6);
              c.input_shapes.push_back(s);
            }
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const Shape& s = c.input_shapes[0];
            const int axis = s.canonical_axis(static_cast<int>(c.spec.attrs.get_int("axis", 1)));
            const std::int64_t outer = product(s, 0, axis), inner = product(s, axis + 1, s.rank());
            // Row by row of the outer axes, each input contributes its axis-length x inner block.
            Values y;
            for (std::int64_t o = 0; o < outer; ++o) {
              for (std::size_t k = 0; k < in.size(); ++k) {
                const std::int64_t block = c.input_shapes[k][axis] * inner;
                for (std::int64_t j = 0; j < block; ++j)
                  y.push_back(in[k][static_cast<std::size_t>(o * block + j)]);
              }
            }
            return std::vector<Values>{y};
          },
  });
}

TEST(Layers, ConcatShapes) {
  LayerSpec spec = spec_of("Concat", 3);
  spec.attrs.set("axis", std::int64_t{-2});
  EXPECT_EQ(create_layer(spec)->output_shapes({Shape{2, 3, 4}, Shape{2, 1, 4}, Shape{2, 5, 4}}),
            std::vector<Shape>{Shape({2, 9, 4})});
}

TEST(Layers, ConcatErrors) {
  expect_shape_error(spec_of("Concat", 2), {Shape{2, 3, 4}, Shape{2, 3, 5}}, "does not match");
  expect_shape_error(spec_of("Concat", 2), {Shape{2, 3, 4}, Shape{2, 3}}, "does not match");
  LayerSpec spec = spec_of("Concat", 2);
  spec.attrs.set("axis", std::int64_t{3});
  expect_shape_error(spec, {Shape{2, 3, 4}, Shape{2, 3, 4}}, "axis 3");
  expect_shape_error(spec_of("Concat", 0), {}, "input");
}

}  // namespace espresso::testing
